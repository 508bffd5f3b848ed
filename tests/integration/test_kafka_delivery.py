"""The service on a real (embedded Tansu) broker: one output per radiology message, skips counted, poison dead-lettered."""

from __future__ import annotations

import json

import httpx
import pytest

from radbridge.domain import sha256_of

from kafka_support import (
    ThreadedService,
    committed,
    end_offsets,
    mixed_messages,
    new_topics,
    publish,
    read_topic,
    settings_for,
    wait_for,
)

pytestmark = pytest.mark.integration


def _headers(record) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


def test_mixed_messages_one_output_per_radiology_message(broker):
    topics = new_topics(broker.bootstrap)
    mix = mixed_messages(60, seed="mix")
    assert mix.poison and mix.skipped and mix.drafted  # the mix really is mixed
    settings = settings_for(broker.bootstrap, topics)

    with ThreadedService(settings) as svc:
        publish(broker.bootstrap, topics.input, mix.messages)
        ends = end_offsets(broker.bootstrap, topics.input, expect=len(mix.messages))
        wait_for(lambda: committed(broker.bootstrap, topics.group, topics.input) == ends, 30, what="all input committed")
        ops = {p: httpx.get(f"http://127.0.0.1:{svc.ops_port}{p}", timeout=5) for p in ("/metrics", "/healthz", "/readyz")}
        drafted = svc.metric("radbridge_drafted_total")
        skipped = {r: svc.metric("radbridge_skipped_total", reason=r) for r in ("already_signed", "not_radiology")}
        dead = svc.metric("radbridge_dead_lettered_total", error_type="malformed")
        lag = {p: svc.service.metrics.registry.get_sample_value(
            "radbridge_consumer_lag", {"topic": topics.input, "partition": str(p)}) for p in range(3)}

    outputs = read_topic(broker.bootstrap, topics.output, expect=len(mix.drafted))
    dlq = read_topic(broker.bootstrap, topics.dlq, expect=len(mix.poison))
    inputs = {r.value: r for r in read_topic(broker.bootstrap, topics.input, expect=len(mix.messages))}

    # exactly one output per radiology report (one each here), keyed by the source bytes and the report's index
    assert len(outputs) == len(mix.drafted)
    assert {o.key.decode() for o in outputs} == {f"{sha256_of(m)[:32]}-0" for m in mix.drafted}
    for out in outputs:
        bundle = json.loads(out.value)
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
        reports = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]
        assert [r["status"] for r in reports] == ["preliminary"]
        h = _headers(out)
        source = next(r for r in inputs.values() if (r.topic, r.partition, r.offset) ==
                      (h["source-topic"], int(h["source-partition"]), int(h["source-offset"])))
        assert f"{sha256_of(source.value)[:32]}-{h['report-index']}" == out.key.decode()
        assert h["model"].startswith("instant:") and h["prompt-version"]

    # poison: original bytes untouched, with the reason and where it came from
    assert {d.value for d in dlq} == mix.poison
    for d in dlq:
        h = _headers(d)
        assert h["dlq-error-type"] == "malformed" and h["dlq-reason"]
        source = inputs[d.value]
        assert (h["dlq-source-topic"], int(h["dlq-source-partition"]), int(h["dlq-source-offset"])) == (
            source.topic, source.partition, source.offset)
        assert d.key == source.key

    # counted, not dead-lettered
    assert drafted == len(mix.drafted)
    expected_skips = {"already_signed": 0, "not_radiology": 0}
    for reason in mix.skipped.values():
        expected_skips[reason] += 1
    assert skipped == expected_skips
    assert dead == len(mix.poison)

    assert ops["/healthz"].status_code == 200 and ops["/readyz"].status_code == 200
    assert "radbridge_generation_seconds_bucket" in ops["/metrics"].text
    assert "radbridge_consumer_lag{" in ops["/metrics"].text
    assert lag == {0: 0, 1: 0, 2: 0}  # everything consumed and committed



def test_a_600_report_message_becomes_600_small_records_and_later_messages_still_flow(broker):
    """The probe of issue 12: a 600-report Bundle (~0.3 MB in) made one 1.6 MB output Bundle, over the producer's
    1 MB request limit, retried forever with nothing committed. Now each report is its own record, keyed by it."""
    from kafka_support import _fhir_report

    big = {"resourceType": "Bundle", "type": "collection",
           "entry": [{"fullUrl": f"urn:uuid:00000000-0000-0000-0000-{i:012d}",
                      "resource": json.loads(_fhir_report(i, f"big{i}"))} for i in range(600)]}
    many = json.dumps(big).encode()
    good = _fhir_report(1, "after-the-big-one")
    assert 200_000 < len(many) < 1_000_000
    topics = new_topics(broker.bootstrap)
    settings = settings_for(broker.bootstrap, topics, batch_size=1)  # the big one alone in its batch
    with ThreadedService(settings) as svc:
        publish(broker.bootstrap, topics.input, [many, good])
        ends = end_offsets(broker.bootstrap, topics.input, expect=2)
        wait_for(lambda: committed(broker.bootstrap, topics.group, topics.input) == ends, 180, what="both committed")
        dead = svc.metric("radbridge_dead_lettered_total", error_type="output_rejected")
    outs = read_topic(broker.bootstrap, topics.output, expect=601)
    assert len(outs) == 601 and not dead
    by_key = {o.key.decode(): o for o in outs}
    assert set(by_key) == {f"{sha256_of(many)[:32]}-{i}" for i in range(600)} | {f"{sha256_of(good)[:32]}-0"}
    assert max(len(o.value) for o in outs) < 20_000  # bounded by one report, whatever the message's size
    for key, out in by_key.items():
        (dr,) = [e["resource"] for e in json.loads(out.value)["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]
        (own,) = [i["value"] for i in dr["identifier"] if i.get("system") == "urn:radbridge:draft"]
        assert own == key  # the record key is the draft's own identifier


def test_an_output_kafka_refuses_is_dead_lettered_and_later_messages_still_flow(broker):
    """A record the producer refuses for what it is (here: every draft is over a 2 kB request limit) is a permanent
    error for its source message, dead-lettered as output_rejected; the partition moves on and is committed."""
    from kafka_support import _fhir_report

    first, second = _fhir_report(1, "refused-one"), _fhir_report(2, "refused-two")
    lab = _fhir_report(3, "lab-after", category="LAB")  # skipped: needs no output record
    topics = new_topics(broker.bootstrap, partitions=1)
    settings = settings_for(broker.bootstrap, topics, batch_size=1, kafka_options={"max_request_size": 2000})
    with ThreadedService(settings) as svc:
        publish(broker.bootstrap, topics.input, [first, second, lab])
        ends = end_offsets(broker.bootstrap, topics.input, expect=3)
        wait_for(lambda: committed(broker.bootstrap, topics.group, topics.input) == ends, 120, what="all committed")
        rejected = svc.metric("radbridge_dead_lettered_total", error_type="output_rejected")
        skipped = svc.metric("radbridge_skipped_total", reason="not_radiology")
    dead = read_topic(broker.bootstrap, topics.dlq, expect=2)
    assert sorted(d.value for d in dead) == sorted([first, second])  # the original bytes
    assert {_headers(d)["dlq-error-type"] for d in dead} == {"output_rejected"}
    assert all("bytes" in _headers(d)["dlq-reason"] for d in dead)
    assert rejected == 2 and skipped == 1
