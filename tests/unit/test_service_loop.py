"""The consumer loop's commit, retry and rebalance rules, on in-memory stand-ins for the Kafka clients."""

from __future__ import annotations

import base64
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kafka.errors import KafkaTimeoutError
from kafka.structs import TopicPartition

from radbridge.formats.fhir.writer import bundle_bytes
from radbridge.adapters.model.memory import InstantGenerator
from radbridge.errors import GeneratorUnavailable
from radbridge.domain import sha256_of
from radbridge.pipeline import Drafter
from radbridge.retry import RetryPolicy
from radbridge.service.backoff import Backoff
from radbridge.service.loop import Service

T0, T1 = TopicPartition("in", 0), TopicPartition("in", 1)


def _report(n: int) -> bytes:
    text = f"FINDINGS: Lungs are clear. No effusion. Study {n}."
    return json.dumps({
        "resourceType": "DiagnosticReport", "id": f"u{n}", "status": "preliminary",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "36643-5", "display": "XR Chest 2 Views"}]},
        "subject": {"identifier": {"system": "urn:t", "value": f"P{n}"}},
        "presentedForm": [{"contentType": "text/plain", "data": base64.b64encode(text.encode()).decode()}],
    }).encode()


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None = None
    timestamp: int = 1_700_000_000_000
    headers: list = field(default_factory=list)


class FakeConsumer:
    def __init__(self, records: dict[TopicPartition, list[bytes]]):
        self.queues = {tp: deque(Rec(tp.topic, tp.partition, i, v) for i, v in enumerate(vals))
                       for tp, vals in records.items()}
        self.assigned = set(records)
        self.paused_tps: set = set()
        self.commits: list[dict] = []
        self.polls_while_paused = 0
        self.listener = None
        self.on_poll = None  # hook: lets a test stop the service or rebalance from inside poll()
        self.closed = False

    def subscribe(self, topics, listener):
        self.listener = listener
        listener.on_partitions_assigned(set(self.assigned))

    def poll(self, timeout_ms=0, max_records=None):
        if self.on_poll:
            self.on_poll(self)
        if self.paused_tps and self.paused_tps >= self.assigned:
            self.polls_while_paused += 1
        out, room = {}, max_records or 10**9
        for tp in sorted(self.assigned - self.paused_tps):
            q = self.queues.get(tp, deque())
            while q and room:
                out.setdefault(tp, []).append(q.popleft())
                room -= 1
        return out

    def assignment(self):
        return set(self.assigned)

    def pause(self, *tps):
        self.paused_tps |= set(tps)

    def resume(self, *tps):
        self.paused_tps -= set(tps)

    def paused(self):
        return set(self.paused_tps)

    def seek(self, tp, offset):
        raise AssertionError("no record should be returned while paused")

    def commit(self, offsets):
        self.commits.append({tp: om.offset for tp, om in offsets.items()})

    def highwater(self, tp):
        return None

    def close(self, autocommit=True):
        assert autocommit is False
        self.closed = True


class Future:
    def __init__(self, error=None):
        self.error = error

    def get(self, timeout=None):
        if self.error:
            raise self.error


class FakeProducer:
    def __init__(self, fail_first: int = 0):
        self.fail_first = fail_first
        self.sent: list[tuple] = []
        self.acked: list[tuple] = []

    def send(self, topic, key=None, value=None, headers=None):
        self.sent.append((topic, key, value, headers))
        if self.fail_first > 0:
            self.fail_first -= 1
            return Future(KafkaTimeoutError("no ack"))
        self.acked.append((topic, key, value, headers))
        return Future()

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        pass


class SwitchableGenerator(InstantGenerator):
    def __init__(self):
        super().__init__()
        self.down = False

    def generate(self, prompts, params):
        if self.down:
            self.calls += 1
            raise GeneratorUnavailable("model server down")
        return super().generate(prompts, params)


def _service(consumer, producer, generator=None, batch_size=8) -> Service:
    return Service(
        consumer=consumer, producer=producer, drafter=Drafter(generator or InstantGenerator()),
        input_topics=["in"], output_topic="out", dlq_topic="dlq", serialize=bundle_bytes,
        batch_size=batch_size, batch_wait_ms=0, backoff=Backoff(RetryPolicy(initial_s=0.01, max_s=0.02, jitter=0)),
    )


def _stop_when_drained(service):
    def hook(consumer):
        if all(not q for q in consumer.queues.values()) and not service._pending:
            service.stop()
    return hook


def test_commits_each_partition_after_its_outputs_are_acked():
    consumer = FakeConsumer({T0: [_report(i) for i in range(3)], T1: [_report(10 + i) for i in range(2)] + [b"junk"]})
    producer = FakeProducer()
    service = _service(consumer, producer)
    consumer.on_poll = _stop_when_drained(service)
    service.run()

    assert [t for t, *_ in producer.acked].count("out") == 5
    dlq = [(k, v) for t, k, v, _ in producer.acked if t == "dlq"]
    assert dlq == [(None, b"junk")]
    merged: dict = {}
    for c in consumer.commits:
        merged.update(c)
    assert merged == {T0: 3, T1: 3}
    assert consumer.closed


def test_a_missing_ack_means_no_commit_and_only_the_unacked_output_is_resent():
    consumer = FakeConsumer({T0: [_report(i) for i in range(3)]})
    producer = FakeProducer(fail_first=1)
    service = _service(consumer, producer)
    commits_seen_at_failure = []
    original_send = producer.send

    def send(*a, **kw):
        future = original_send(*a, **kw)
        if future.error:
            commits_seen_at_failure.append(len(consumer.commits))
        return future

    producer.send = send
    consumer.on_poll = _stop_when_drained(service)
    service.run()

    assert commits_seen_at_failure == [0]
    keys_sent = [k for _, k, _, _ in producer.sent]
    assert len(keys_sent) == 4 and len(set(keys_sent)) == 3  # the failed one once more, the acked ones not again
    assert consumer.commits == [{T0: 3}]


def test_outage_pauses_partitions_keeps_polling_and_never_commits_or_dead_letters():
    consumer = FakeConsumer({T0: [_report(i) for i in range(4)]})
    producer = FakeProducer()
    generator = SwitchableGenerator()
    generator.down = True
    service = _service(consumer, producer, generator)

    def hook(c):
        if generator.calls >= 3:
            service.stop()  # SIGTERM during the outage: give up the batch, commit nothing

    consumer.on_poll = hook
    service.run()

    assert consumer.polls_while_paused >= 2  # heartbeats / poll interval kept alive while backing off
    assert consumer.commits == [] and producer.sent == []
    assert service.metrics.registry.get_sample_value(
        "radbridge_retries_total", {"stage": "generate", "error_type": "generator_unavailable"}) >= 2


def test_outage_then_recovery_drafts_the_same_batch():
    consumer = FakeConsumer({T0: [_report(i) for i in range(4)]})
    producer = FakeProducer()
    generator = SwitchableGenerator()
    generator.down = True
    service = _service(consumer, producer, generator)

    def hook(c):
        if c.polls_while_paused >= 3:
            generator.down = False
        if not generator.down and not c.paused_tps:
            _stop_when_drained(service)(c)

    consumer.on_poll = hook
    service.run()
    assert consumer.commits == [{T0: 4}]
    assert len(producer.acked) == 4
    assert not consumer.paused_tps


def test_rebalance_during_outage_drops_lost_partition_and_pauses_new_assignment():
    consumer = FakeConsumer({T0: [_report(i) for i in range(2)], T1: [_report(10 + i) for i in range(2)]})
    producer = FakeProducer()
    generator = SwitchableGenerator()
    generator.down = True
    service = _service(consumer, producer, generator)
    state = {"rebalanced": False}

    def hook(c):
        if c.polls_while_paused >= 2 and not state["rebalanced"]:
            state["rebalanced"] = True
            c.listener.on_partitions_revoked({T0, T1})
            c.assigned = {T0}  # T1 went to another instance
            c.paused_tps = set()  # a new assignment starts unpaused in kafka-python
            c.listener.on_partitions_assigned({T0})
            assert c.paused_tps == {T0}  # the loop re-paused it: no new work while the model is down
            # the consumer restarts T0 from the committed offset (none yet): redeliver its records
            c.queues[T0] = deque(Rec("in", 0, i, _report(i)) for i in range(2))
            generator.down = False
        elif state["rebalanced"] and not c.paused_tps:
            _stop_when_drained(service)(c)

    consumer.on_poll = hook
    service.run()

    merged: dict = {}
    for commit in consumer.commits:
        merged.update(commit)
    assert merged == {T0: 2}  # T1's records were dropped, never committed by us
    assert len(producer.acked) == 2


def test_oru_topic_gets_an_hl7_draft_per_report_and_a_failed_oru_is_resent_before_commit():
    consumer = FakeConsumer({T0: [_report(i) for i in range(2)]})
    producer = FakeProducer()
    failed_once = {"done": False}
    original_send = producer.send

    def send(topic, **kw):
        if topic == "oru" and not failed_once["done"]:
            failed_once["done"] = True  # the Bundle of this input is acked, its ORU is not
            producer.sent.append((topic, kw.get("key"), kw.get("value"), kw.get("headers")))
            return Future(KafkaTimeoutError("no ack"))
        return original_send(topic, **kw)

    producer.send = send
    service = Service(
        consumer=consumer, producer=producer, drafter=Drafter(InstantGenerator(), emit_oru=True),
        input_topics=["in"], output_topic="out", dlq_topic="dlq", serialize=bundle_bytes, oru_topic="oru",
        batch_size=8, batch_wait_ms=0, backoff=Backoff(RetryPolicy(initial_s=0.01, max_s=0.02, jitter=0)),
    )
    consumer.on_poll = _stop_when_drained(service)
    service.run()

    orus = [(k, v) for t, k, v, _ in producer.acked if t == "oru"]
    assert len(orus) == 2 and all(v.startswith(b"MSH|") and b"ORU^R01" in v for _, v in orus)
    assert all(b"|P" in v for _, v in orus)  # preliminary result status
    assert consumer.commits == [{T0: 2}]


class _ScriptedTgi:
    """A TGI ``/generate`` stand-in: 503 for the first ``failures`` requests, then an answer; counts requests."""

    def __init__(self, failures: int):
        self.failures, self.requests = failures, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length") or 0))
                outer.requests += 1
                ok = outer.requests > outer.failures
                body = json.dumps({"generated_text": "No acute disease.", "details": {
                    "finish_reason": "eos_token", "generated_tokens": 4, "prefill": [], "tokens": []}}).encode()
                self.send_response(200 if ok else 503)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body) if ok else 0))
                self.end_headers()
                if ok:
                    self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def test_the_loop_is_the_one_retry_owner_the_adapter_tries_each_prompt_once():
    from radbridge.adapters.model.tgi import TgiGenerator

    server = _ScriptedTgi(failures=3)
    consumer = FakeConsumer({T0: [_report(0)]})
    producer = FakeProducer()
    service = _service(consumer, producer, TgiGenerator(server.url, timeout=5))
    paused_after: set[int] = set()  # request counts at which the loop polled with the partition paused

    def hook(c):
        if c.paused_tps:
            paused_after.add(server.requests)
        if consumer.commits:
            service.stop()

    consumer.on_poll = hook
    try:
        service.run()
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
    # three failed batch attempts and the good one, one request each: no retries nested inside the adapter
    assert server.requests == 4
    assert service.metrics.registry.get_sample_value(
        "radbridge_retries_total", {"stage": "generate", "error_type": "generator_unavailable"}) == 3
    assert paused_after == {1, 2, 3}  # after each failed attempt the loop kept polling, partition paused
    assert consumer.commits == [{T0: 1}] and len(producer.acked) == 1


def _abnormal_report(n: int) -> bytes:
    doc = json.loads(_report(n))
    text = f"FINDINGS: Large left pleural effusion. Study {n}."
    doc["presentedForm"][0]["data"] = base64.b64encode(text.encode()).decode()
    return json.dumps(doc).encode()


class RecordingStore:
    def __init__(self):
        self.bundles: list[dict] = []

    def transact(self, bundle):
        self.bundles.append(bundle)
        return {}


def test_on_flag_hold_sends_flagged_drafts_to_the_review_topic_and_commits_them():
    # the canned "normal" draft over a large effusion is flagged (omission); a clear chest is not
    consumer = FakeConsumer({T0: [_abnormal_report(1), _report(2)]})
    producer = FakeProducer()
    store = RecordingStore()
    service = _service(consumer, producer)
    service.review_topic, service.fhir_store = "review", store
    consumer.on_poll = _stop_when_drained(service)
    service.run()

    topics = [t for t, *_ in producer.acked]
    assert topics == ["review", "out"]
    held_headers = dict(producer.acked[0][3])
    assert held_headers["draft-flags"] == b"omission"
    assert len(store.bundles) == 1  # only the unflagged draft reached the FHIR server
    assert consumer.commits[-1] == {T0: 2}  # nothing lost, nothing stuck
    assert service.metrics.held._value.get() == 1
    assert service.metrics.draft_flags.labels("omission", "high")._value.get() == 1


def test_on_flag_send_writes_flagged_drafts_with_their_issues_to_the_output_topic():
    consumer = FakeConsumer({T0: [_abnormal_report(1)]})
    producer = FakeProducer()
    service = _service(consumer, producer)
    consumer.on_poll = _stop_when_drained(service)
    service.run()
    ((topic, _, value, _),) = producer.acked
    assert topic == "out" and b'"resourceType":"DetectedIssue"' in value


class SizeLimitedProducer(FakeProducer):
    """Refuses any record over ``limit`` bytes on the output topic, as kafka-python does before sending."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def send(self, topic, key=None, value=None, headers=None):
        from kafka.errors import MessageSizeTooLargeError

        if topic == "out" and len(value) > self.limit:
            raise MessageSizeTooLargeError(f"{len(value)} bytes")
        return super().send(topic, key, value, headers)


def test_a_message_of_many_reports_makes_one_record_per_report_none_oversized():
    many = json.loads(_report(1))
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": {**many, "id": f"r{i}"}} for i in range(40)]}
    big = json.dumps(bundle).encode()  # 40 reports: as one output Bundle it would be far over the limit
    consumer = FakeConsumer({T0: [big, _report(2)]})
    producer = SizeLimitedProducer(limit=20_000)
    service = _service(consumer, producer)
    consumer.on_poll = _stop_when_drained(service)
    service.run()

    outs = [a for a in producer.acked if a[0] == "out"]
    assert len(outs) == 41 and not [a for a in producer.acked if a[0] == "dlq"]
    keys = [key.decode() for _, key, _, _ in outs]
    assert len(set(keys)) == 41  # keyed per report: <source message hash>-<report index>
    assert {k.rsplit("-", 1)[1] for k in keys[:40]} == {str(i) for i in range(40)}
    assert len({k.rsplit("-", 1)[0] for k in keys[:40]}) == 1
    for _, _, value, headers in outs:
        assert len(value) < 20_000
        assert sum(e["resource"]["resourceType"] == "DiagnosticReport" for e in json.loads(value)["entry"]) == 1
        assert dict(headers)["report-index"].isdigit()
    assert consumer.commits[-1] == {T0: 2}


class RefusingProducer(FakeProducer):
    """Refuses (record validation, InvalidRecordError) every output record of the messages whose key starts so."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix.encode()

    def send(self, topic, key=None, value=None, headers=None):
        from kafka.errors import InvalidRecordError

        if topic == "out" and key.startswith(self.prefix):
            raise InvalidRecordError("refused")
        return super().send(topic, key, value, headers)


def test_an_output_kafka_refuses_dead_letters_its_source_and_the_partition_moves_on():
    poison = _report(1)
    consumer = FakeConsumer({T0: [poison, _report(2)]})
    producer = RefusingProducer(sha256_of(poison)[:32])
    service = _service(consumer, producer)
    consumer.on_poll = _stop_when_drained(service)
    service.run()

    assert sorted(t for t, *_ in producer.acked) == ["dlq", "out"]  # the poison one dead-lettered, the next drafted
    ((_, _, dlq_value, dlq_headers),) = [a for a in producer.acked if a[0] == "dlq"]
    assert dlq_value == poison  # the original bytes, for an operator to fix and re-publish
    dlq_headers = dict(dlq_headers)
    assert dlq_headers["dlq-error-type"] == b"output_rejected"
    assert consumer.commits[-1] == {T0: 2}  # nothing blocks the partition
    assert service.metrics.dead_lettered.labels("output_rejected")._value.get() == 1
