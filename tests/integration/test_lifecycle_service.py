"""Draft lifecycle through the real service: embedded broker, sekmet FHIR server, instant generator."""

from __future__ import annotations

import json
import uuid

import pytest

from radbridge.adapters.fhir_server.store import HttpFhirStore
from radbridge.formats.fhir.retire import RETIRED_SYSTEM
from radbridge.ids import DRAFT_SYSTEM

from kafka_support import ThreadedService, committed, end_offsets, new_topics, publish, read_topic, settings_for, wait_for, report_key
from test_lifecycle_fhir import _message

pytestmark = pytest.mark.integration


def test_signed_report_retires_the_draft_in_fhir_and_on_the_topic_and_a_redelivery_changes_nothing(broker, sekmet_fhir):
    acc = f"ACC-{uuid.uuid4().hex[:12]}"
    prelim, signed = _message(acc, "preliminary"), _message(acc, "final")
    topics = new_topics(broker.bootstrap)
    settings = settings_for(broker.bootstrap, topics, batch_size=4)

    def publish_and_wait(messages: list[bytes], total: int) -> None:
        publish(broker.bootstrap, topics.input, messages)
        ends = end_offsets(broker.bootstrap, topics.input, expect=total)
        wait_for(lambda: committed(broker.bootstrap, topics.group, topics.input) == ends, 30, what="committed")

    with HttpFhirStore(sekmet_fhir.base_url, timeout=10.0) as store, ThreadedService(settings, fhir_store=store) as svc:
        publish_and_wait([prelim], 1)  # the draft first: the signed one may land on another partition
        publish_and_wait([signed], 2)
        (draft,) = [r for r in store.search("DiagnosticReport", {"identifier": acc})
                    if any(i.get("system") == DRAFT_SYSTEM for i in r["identifier"])]
        key = next(i["value"] for i in draft["identifier"] if i["system"] == DRAFT_SYSTEM)
        assert draft["status"] == "cancelled" and draft["meta"]["versionId"] == "2"
        assert len(store.search("Provenance", {"_tag": f"{RETIRED_SYSTEM}|{key}"})) == 1

        publish_and_wait([signed], 3)  # the same signed report again: nothing more in the FHIR server
        assert store.read("DiagnosticReport", draft["id"])["meta"]["versionId"] == "2"
        assert len(store.search("Provenance", {"_tag": f"{RETIRED_SYSTEM}|{key}"})) == 1
        assert svc.metric("radbridge_retirements_total", outcome="retired") == 1
        assert svc.metric("radbridge_retirements_total", outcome="already_retired") == 1
        assert svc.metric("radbridge_skipped_total", reason="already_signed") == 2

    outputs = read_topic(broker.bootstrap, topics.output, expect=3)
    assert len(outputs) == 3 and {o.key.decode() for o in outputs} == {report_key(prelim)}
    notices = [o for o in outputs if dict(o.headers).get("record-type") == b"draft-retired"]
    assert len(notices) == 2 and notices[0].value == notices[1].value
    notice = json.loads(notices[0].value)
    assert notice["draft"]["value"] == key and notice["status"] == "cancelled"
    assert b"MRN-7" not in notices[0].value and b"Lungs" not in notices[0].value
    assert read_topic(broker.bootstrap, topics.dlq, timeout_s=1) == []
