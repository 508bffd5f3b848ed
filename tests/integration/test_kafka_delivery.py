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

    # exactly one output per radiology message, keyed by the source bytes
    assert len(outputs) == len(mix.drafted)
    assert {o.key.decode() for o in outputs} == {sha256_of(m)[:32] for m in mix.drafted}
    for out in outputs:
        bundle = json.loads(out.value)
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
        reports = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]
        assert [r["status"] for r in reports] == ["preliminary"]
        h = _headers(out)
        source = next(r for r in inputs.values() if (r.topic, r.partition, r.offset) ==
                      (h["source-topic"], int(h["source-partition"]), int(h["source-offset"])))
        assert sha256_of(source.value)[:32] == out.key.decode()
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



def test_an_output_too_large_for_kafka_is_dead_lettered_and_later_messages_still_flow(broker):
    """The probe of issue 12: a 600-report Bundle (~0.3 MB in) whose output Bundle is over the producer's 1 MB
    request limit used to be retried forever with nothing committed; now its source is dead-lettered with reason
    output_rejected and the message published after it is drafted."""
    from kafka_support import _fhir_report

    big = {"resourceType": "Bundle", "type": "collection",
           "entry": [{"fullUrl": f"urn:uuid:00000000-0000-0000-0000-{i:012d}",
                      "resource": json.loads(_fhir_report(i, f"big{i}"))} for i in range(600)]}
    poison = json.dumps(big).encode()
    good = _fhir_report(1, "after-the-big-one")
    assert 200_000 < len(poison) < 1_000_000
    topics = new_topics(broker.bootstrap)
    settings = settings_for(broker.bootstrap, topics, batch_size=1)  # the big one alone in its batch
    with ThreadedService(settings) as svc:
        publish(broker.bootstrap, topics.input, [poison, good])
        ends = end_offsets(broker.bootstrap, topics.input, expect=2)
        wait_for(lambda: committed(broker.bootstrap, topics.group, topics.input) == ends, 120, what="both committed")
        rejected = svc.metric("radbridge_dead_lettered_total", error_type="output_rejected")
    (dead,) = read_topic(broker.bootstrap, topics.dlq, expect=1)
    assert dead.value == poison and _headers(dead)["dlq-error-type"] == "output_rejected"
    (out,) = read_topic(broker.bootstrap, topics.output, expect=1)
    assert out.key.decode() == sha256_of(good)[:32]
    assert rejected == 1
