"""Sign-off feedback through the real service: embedded broker, sekmet FHIR server, instant generator."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from report_messages import cxr_report
from radbridge.adapters.fhir_server.store import HttpFhirStore
from radbridge.adapters.kafka.clients import ensure_topics
from radbridge.adapters.model.memory import InstantGenerator
from radbridge.feedback_report import load, write_report
from radbridge.pipeline import Drafter, Envelope

from kafka_support import ThreadedService, committed, end_offsets, new_topics, publish, read_topic, settings_for, wait_for

pytestmark = pytest.mark.integration

SIGNED_AT = (datetime.now(timezone.utc) + timedelta(hours=1)).replace(microsecond=0)  # an hour after the drafts


def _message(acc: str, status: str, impression: str | None = None) -> bytes:
    issued = SIGNED_AT.isoformat().replace("+00:00", "Z") if status == "final" else None
    return cxr_report(acc, status, f"{status[:1]}-{acc}", impression, acc_system="urn:oid:1.2.3.4.5.11",
                      mrn=("urn:oid:1.2.3.4.5.1", "MRN-7"), issued=issued)


def _draft_text(prelim: bytes) -> str:
    """What the service's instant generator writes for this message (deterministic by prompt)."""
    (outcome,) = Drafter(InstantGenerator()).process([Envelope(prelim)])
    return outcome.drafts[0].impression


def test_sign_offs_give_one_feedback_record_each_and_matching_metrics_and_a_redelivery_adds_none(
    broker, sekmet_fhir, tmp_path
):
    run = uuid.uuid4().hex[:8]
    accs = {name: f"ACC-{name}-{run}" for name in ("same", "edited", "added", "never")}
    prelims = {n: _message(a, "preliminary") for n, a in accs.items() if n != "never"}
    drafts = {n: _draft_text(m) for n, m in prelims.items()}
    signed = {
        "same": _message(accs["same"], "final", drafts["same"].upper()),  # case and punctuation only
        "edited": _message(accs["edited"], "final", "Normal chest. No acute cardiopulmonary process."),
        "added": _message(accs["added"], "final", drafts["added"].rstrip(".") + ". Small right pneumothorax."),
        "never": _message(accs["never"], "final", "No acute disease."),
    }
    topics = new_topics(broker.bootstrap)
    feedback_topic = f"feedback-{run}"
    ensure_topics({"bootstrap_servers": broker.bootstrap}, [feedback_topic], partitions=3)
    settings = settings_for(broker.bootstrap, topics, batch_size=4, feedback_topic=feedback_topic)

    def publish_and_wait(messages: list[bytes], total: int) -> None:
        publish(broker.bootstrap, topics.input, messages)
        ends = end_offsets(broker.bootstrap, topics.input, expect=total)
        wait_for(lambda: committed(broker.bootstrap, topics.group, topics.input) == ends, 60, what="committed")

    with HttpFhirStore(sekmet_fhir.base_url, timeout=10.0) as store, ThreadedService(settings, fhir_store=store) as svc:
        publish_and_wait(list(prelims.values()), 3)  # drafts first: a signed one may land on another partition
        publish_and_wait(list(signed.values()), 7)
        publish_and_wait([signed["edited"]], 8)  # one sign-off sent again
        metrics = {o: svc.metric("radbridge_signoff_total", outcome=o)
                   for o in ("accepted", "light_edit", "heavy_edit", "replaced", "no_draft")}
        added_metric = svc.metric("radbridge_signoff_observations_total", change="added", observation="Pneumothorax")
        sign_seconds = svc.metric("radbridge_signoff_seconds_count")

    values = read_topic(broker.bootstrap, feedback_topic, expect=5)
    assert len(values) == 5  # four sign-offs and the one sent again, which repeats its key and bytes
    by_key: dict[bytes, set[bytes]] = {}
    for v in values:
        by_key.setdefault(v.key, set()).add(v.value)
    assert len(by_key) == 4 and all(len(bodies) == 1 for bodies in by_key.values())
    records = {r["accession"]["value"]: r for r in load(v.value for v in values)}
    assert len(records) == 4
    assert records[accs["same"]]["outcome"] == "accepted"
    assert records[accs["edited"]]["outcome"] in ("heavy_edit", "replaced", "light_edit")
    assert records[accs["edited"]]["outcome"] != "accepted"
    assert records[accs["added"]]["drafts"][0]["added"] == ["Pneumothorax"]
    assert records[accs["never"]]["outcome"] == "no_draft" and records[accs["never"]]["drafts"] == []
    for r in records.values():
        for d in r["drafts"]:
            assert d["verdict"] == "retired" and d["model"] == "instant-canned" and d["template"]
    for v in values:
        assert b"MRN-7" not in v.value and b"Distinctive-Findings-Text" not in v.value and b"Lungs" not in v.value

    # the metrics count each sign-off once, the redelivery not again
    outcomes = [r["outcome"] for r in records.values()]
    assert metrics == {o: outcomes.count(o) for o in metrics}
    assert added_metric == 1 and sign_seconds == 3
    assert all(3000 < d["seconds_to_sign"] <= 3600 for r in records.values() for d in r["drafts"])
    assert read_topic(broker.bootstrap, topics.dlq, timeout_s=1) == []

    counts = write_report(list(records.values()), tmp_path)
    assert counts["signed"] == 4 and counts["accepted"] == 1 and counts["no_draft"] == 1


def test_feedback_survives_a_restart_and_is_shared_by_two_instances(broker, sekmet_fhir):
    """Drafts by one instance, then that instance gone; two new instances of the group share the sign-offs: every
    sign-off is compared (the FHIR server is the memory) and counted by exactly one of them."""
    run = uuid.uuid4().hex[:8]
    accs = [f"ACC-r{i}-{run}" for i in range(6)]
    prelims = [_message(a, "preliminary") for a in accs]
    signed = [_message(a, "final", _draft_text(p)) for a, p in zip(accs, prelims)]
    topics = new_topics(broker.bootstrap)
    feedback_topic = f"feedback-{run}"
    ensure_topics({"bootstrap_servers": broker.bootstrap}, [feedback_topic], partitions=3)
    settings = settings_for(broker.bootstrap, topics, batch_size=2, feedback_topic=feedback_topic)

    def publish_and_wait(messages: list[bytes], total: int) -> None:
        publish(broker.bootstrap, topics.input, messages)
        ends = end_offsets(broker.bootstrap, topics.input, expect=total)
        wait_for(lambda: committed(broker.bootstrap, topics.group, topics.input) == ends, 90, what="committed")

    with HttpFhirStore(sekmet_fhir.base_url, timeout=10.0) as store:
        with ThreadedService(settings, fhir_store=store):
            publish_and_wait(prelims, 6)
        with ThreadedService(settings, fhir_store=store) as b, ThreadedService(settings, fhir_store=store) as c:
            publish_and_wait(signed, 12)
            accepted = [s.metric("radbridge_signoff_total", outcome="accepted") for s in (b, c)]
            no_draft = sum(s.metric("radbridge_signoff_total", outcome="no_draft") for s in (b, c))

    records = load(v.value for v in read_topic(broker.bootstrap, feedback_topic, expect=6))
    assert sorted(r["accession"]["value"] for r in records) == sorted(accs)
    assert {r["outcome"] for r in records} == {"accepted"}
    assert sum(accepted) == 6 and no_draft == 0
