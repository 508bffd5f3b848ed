"""A dependency goes down mid-stream: no commits and no dead letters while it is down; everything drafted after."""

from __future__ import annotations

import time

import httpx
import pytest

from radbridge.adapters.fhir_server.store import MemoryFhirStore
from radbridge.adapters.model.memory import InstantGenerator
from radbridge.errors import GeneratorUnavailable, StoreUnavailable
from radbridge.pipeline import Drafter

from kafka_support import (
    report_key,
    ThreadedService,
    committed,
    end_offsets,
    new_topics,
    publish,
    radiology_messages,
    read_topic,
    settings_for,
    wait_for,
)

pytestmark = pytest.mark.integration


class Switch:
    """A dependency the test can take down and bring back."""

    def __init__(self, error: Exception):
        self.error = error
        self.down = False
        self.failures = 0

    def check(self):
        if self.down:
            self.failures += 1
            raise self.error


class FlakyGenerator(InstantGenerator):
    def __init__(self, switch: Switch):
        super().__init__()
        self.switch = switch

    def generate(self, prompts, params):
        self.switch.check()
        return super().generate(prompts, params)


class FlakyStore(MemoryFhirStore):
    def __init__(self, switch: Switch):
        super().__init__()
        self.switch = switch
        self.accepted = 0

    def transact(self, bundle):
        self.switch.check()
        self.accepted += 1
        return super().transact(bundle)


def _assert_outage_then_recovery(broker, topics, svc, switch, messages, extra_check=None):
    first, second = messages[: len(messages) // 2], messages[len(messages) // 2:]
    publish(broker.bootstrap, topics.input, first)
    ends = end_offsets(broker.bootstrap, topics.input, expect=len(first))
    wait_for(lambda: committed(broker.bootstrap, topics.group, topics.input) == ends, 30, what="first half committed")

    switch.down = True
    publish(broker.bootstrap, topics.input, second)
    wait_for(lambda: switch.failures >= 3, 30, what="retries during the outage")
    before = committed(broker.bootstrap, topics.group, topics.input)
    ready = httpx.get(f"http://127.0.0.1:{svc.ops_port}/readyz", timeout=5)
    time.sleep(1.5)  # a while longer down: still nothing may move
    assert committed(broker.bootstrap, topics.group, topics.input) == before == ends
    assert ready.status_code == 503
    assert httpx.get(f"http://127.0.0.1:{svc.ops_port}/healthz", timeout=5).status_code == 200  # alive, polling
    assert svc.metric("radbridge_dead_lettered_total", error_type=switch.error.kind) == 0
    assert svc.metric("radbridge_retries_total", stage=extra_check or "generate", error_type=switch.error.kind) >= 3

    switch.down = False
    all_ends = end_offsets(broker.bootstrap, topics.input, expect=len(messages))
    wait_for(lambda: committed(broker.bootstrap, topics.group, topics.input) == all_ends, 30, what="recovery")
    assert httpx.get(f"http://127.0.0.1:{svc.ops_port}/readyz", timeout=5).status_code == 200

    outputs = read_topic(broker.bootstrap, topics.output, expect=len(messages))
    assert {o.key.decode() for o in outputs} == {report_key(m) for m in messages}
    assert read_topic(broker.bootstrap, topics.dlq, timeout_s=1) == []
    return outputs


def test_model_down_mid_stream_no_commit_no_dlq_then_recovers(broker):
    topics = new_topics(broker.bootstrap)
    switch = Switch(GeneratorUnavailable("model server refused the connection"))
    settings = settings_for(broker.bootstrap, topics, batch_size=4)
    drafter = Drafter(FlakyGenerator(switch))
    with ThreadedService(settings, drafter=drafter) as svc:
        outputs = _assert_outage_then_recovery(broker, topics, svc, switch, radiology_messages(24, seed="gen"))
    assert len(outputs) == 24  # retries re-drafted the same batch; nothing was written twice


def test_fhir_server_down_mid_stream_no_commit_no_dlq_then_recovers(broker):
    topics = new_topics(broker.bootstrap)
    switch = Switch(StoreUnavailable("FHIR server returned 503"))
    store = FlakyStore(switch)
    settings = settings_for(broker.bootstrap, topics, batch_size=4)
    with ThreadedService(settings, fhir_store=store) as svc:
        _assert_outage_then_recovery(broker, topics, svc, switch, radiology_messages(24, seed="fhir"), "deliver")
    # every Bundle reached the FHIR server before its offset was committed
    assert store.accepted == 24
