"""Draft lifecycle: a signed report retires radbridge's unsigned AI draft of the same study (in-memory store, fake Kafka)."""

from __future__ import annotations

import json

from kafka.structs import TopicPartition

from report_messages import cxr_report
from radbridge.adapters.fhir_server.store import MemoryFhirStore
from radbridge.adapters.model.memory import InstantGenerator
from radbridge.domain import SkipReason
from radbridge.errors import StoreRejected, StoreUnavailable
from radbridge.formats.fhir.retire import RETIRED_STATUS, RETIRED_SYSTEM, retirement_bundle
from radbridge.formats.fhir.writer import AIAST, bundle_bytes, validate_bundle
from radbridge.ids import DRAFT_SYSTEM
from radbridge.pipeline import Drafter, Envelope, Mode
from radbridge.retry import RetryPolicy
from radbridge.service.backoff import Backoff
from radbridge.service.loop import Service
from radbridge.service.records import output_record

from test_service_loop import FakeConsumer, FakeProducer, Rec

T0 = TopicPartition("in", 0)


def _report(acc: str, status: str, rid: str, impression: str | None = None) -> bytes:
    return cxr_report(acc, status, rid, impression)


def prelim(acc: str = "A1") -> bytes:
    return _report(acc, "preliminary", f"p-{acc}")


def signed(acc: str = "A1", status: str = "final") -> bytes:
    return _report(acc, status, f"s-{acc}", impression="No acute disease.")


def _service(records: list[bytes], store, producer=None) -> tuple[Service, FakeConsumer, FakeProducer]:
    consumer = FakeConsumer({T0: records})
    producer = producer or FakeProducer()
    service = Service(
        consumer=consumer, producer=producer, drafter=Drafter(InstantGenerator()),
        input_topics=["in"], output_topic="out", dlq_topic="dlq", serialize=bundle_bytes, fhir_store=store,
        batch_size=1, batch_wait_ms=0, backoff=Backoff(RetryPolicy(initial_s=0.01, max_s=0.02, jitter=0)),
    )

    def hook(c):
        if all(not q for q in c.queues.values()) and not service._pending:
            service.stop()

    consumer.on_poll = hook
    return service, consumer, producer


def _run(records, store, producer=None) -> tuple[Service, FakeConsumer, FakeProducer]:
    service, consumer, producer = _service(records, store, producer)
    service.run()
    return service, consumer, producer


def _drafts(store) -> list[dict]:
    return [r for r in store.all("DiagnosticReport") if any(i.get("system") == DRAFT_SYSTEM for i in r["identifier"])]


def _count(service, outcome) -> float:
    return service.metrics.retirements.labels(outcome)._value.get()


def _retirement_records(producer) -> list[tuple]:
    return [(k, v, dict(h)) for t, k, v, h in producer.acked if t == "out" and dict(h).get("record-type") == b"draft-retired"]


# ---------------------------------------------------------------- the core only classifies


def test_live_signed_report_asks_to_retire_its_accession_and_is_still_skipped():
    (outcome,) = Drafter(InstantGenerator()).process([Envelope(signed("A9"))])
    assert [s.reason for s in outcome.skipped] == [SkipReason.ALREADY_SIGNED]
    assert [(r.accession.value, r.signed.status) for r in outcome.retire] == [("A9", "final")]
    assert outcome.bundles == ()  # the signed report itself is never rewritten


def test_replay_and_unsigned_reports_retire_nothing():
    (replayed,) = Drafter(InstantGenerator(), mode=Mode.REPLAY).process([Envelope(signed())])
    (draft,) = Drafter(InstantGenerator()).process([Envelope(prelim())])
    assert replayed.retire == () and draft.retire == ()


def test_a_signed_report_without_accession_retires_nothing():
    doc = json.loads(signed())
    del doc["identifier"]
    (outcome,) = Drafter(InstantGenerator()).process([Envelope(json.dumps(doc).encode())])
    assert outcome.retire == () and outcome.skipped


# ---------------------------------------------------------------- the service retires


def test_signed_report_retires_the_draft_with_a_provenance_and_a_notice_keyed_like_the_draft():
    store = MemoryFhirStore()
    service, consumer, producer = _run([prelim(), signed()], store)

    (draft,) = _drafts(store)
    assert draft["status"] == RETIRED_STATUS and draft["meta"]["versionId"] == "2"
    assert {"system": RETIRED_SYSTEM, "code": draft["identifier"][0]["value"]} in draft["meta"]["tag"]
    assert AIAST in draft["meta"]["security"]  # still says it was AI-written
    assert "Retired: superseded by the signed report." in draft["text"]["div"]
    (prov,) = store.search("Provenance", {"_tag": f"{RETIRED_SYSTEM}|{draft['identifier'][0]['value']}"})
    assert prov["activity"]["coding"][0]["code"] == "UPDATE"
    assert prov["reason"] == [{"text": "superseded by the signed report"}]
    assert prov["target"] == [{"reference": f"DiagnosticReport/{draft['id']}"}]
    assert prov["entity"] == [{"role": "source", "what": {"reference": "DiagnosticReport/s-A1"}}]

    draft_record = next((k, v) for t, k, v, h in producer.acked if t == "out" and dict(h)["content-type"] == b"application/fhir+json")
    ((key, value, headers),) = _retirement_records(producer)
    assert key == draft_record[0]  # keyed like the draft's record: latest per key is the retirement
    notice = json.loads(value)
    assert notice["type"] == "draft-retired" and notice["status"] == "cancelled"
    assert notice["draft"] == {"system": DRAFT_SYSTEM, "value": draft["identifier"][0]["value"]}
    assert notice["accession"] == {"system": "urn:acc", "value": "A1"}
    assert notice["signedReportStatus"] == "final"
    for text in (b"Distinctive-Findings-Text", b"PATIENT-ID-77", b"No acute disease"):
        assert text not in value
    assert headers["content-type"] == b"application/json"
    assert consumer.commits[-1] == {T0: 2}
    assert _count(service, "retired") == 1


def test_the_notice_key_is_the_draft_records_key():
    (outcome,) = Drafter(InstantGenerator()).process([Envelope(prelim())])
    store = MemoryFhirStore()
    store.transact(outcome.bundles[0])
    _, _, producer = _run([signed()], store)
    ((key, _, _),) = _retirement_records(producer)
    assert key == output_record("out", Rec("in", 0, 0, b""), outcome, 0, b"").key


def test_a_second_delivery_of_the_signed_report_changes_nothing_and_repeats_the_same_notice():
    store = MemoryFhirStore()
    _, _, first = _run([prelim(), signed()], store)
    before = (store.all("DiagnosticReport"), store.all("Provenance"), store.transactions)
    service, consumer, again = _run([signed()], store)
    assert (store.all("DiagnosticReport"), store.all("Provenance"), store.transactions) == before
    # the same key and bytes (only the source-offset header differs: this fake redelivers at another offset)
    assert [r[:2] for r in _retirement_records(again)] == [r[:2] for r in _retirement_records(first)]
    assert _count(service, "already_retired") == 1 and _count(service, "retired") == 0
    assert consumer.commits[-1] == {T0: 1}


def test_an_amended_report_after_the_final_one_leaves_the_retired_draft_as_it_is():
    store = MemoryFhirStore()
    _run([prelim(), signed()], store)
    before = store.all("DiagnosticReport")
    service, _, _ = _run([signed(status="amended")], store)
    assert store.all("DiagnosticReport") == before and _count(service, "already_retired") == 1


def test_a_draft_a_radiologist_finalised_is_left_alone():
    store = MemoryFhirStore()
    _run([prelim()], store)
    (draft,) = _drafts(store)
    store.update({**draft, "status": "final"})
    before = store.all("DiagnosticReport")
    service, consumer, producer = _run([signed()], store)
    assert store.all("DiagnosticReport") == before
    assert store.search("Provenance", {"_tag": f"{RETIRED_SYSTEM}|{draft['identifier'][0]['value']}"}) == []
    assert _retirement_records(producer) == []
    assert _count(service, "already_final") == 1 and consumer.commits[-1] == {T0: 1}


def test_a_radiologist_edit_between_read_and_write_is_never_overwritten():
    store = MemoryFhirStore()
    _run([prelim()], store)
    (draft,) = _drafts(store)
    real_transact = store.transact

    def racing_transact(bundle):
        if bundle["entry"][0]["request"].get("ifMatch"):  # the retirement: the radiologist signs first
            store.update({**store.read("DiagnosticReport", draft["id"]), "status": "final", "conclusion": "Signed."})
        return real_transact(bundle)

    store.transact = racing_transact
    service, _, producer = _run([signed()], store)
    (now,) = _drafts(store)
    assert now["status"] == "final" and now["conclusion"] == "Signed." and now["meta"]["versionId"] == "2"
    assert store.search("Provenance", {"_tag": f"{RETIRED_SYSTEM}|{draft['identifier'][0]['value']}"}) == []
    assert _retirement_records(producer) == [] and _count(service, "already_final") == 1


def test_a_report_radbridge_never_drafted_produces_nothing():
    store = MemoryFhirStore()
    _run([prelim("OTHER")], store)
    before = (store.all("DiagnosticReport"), store.transactions)
    service, consumer, producer = _run([signed("A1")], store)
    assert (store.all("DiagnosticReport"), store.transactions) == before
    assert producer.acked == [] and _count(service, "not_found") == 1 and consumer.commits[-1] == {T0: 1}


def test_another_systems_ai_report_for_the_study_is_not_touched():
    store = MemoryFhirStore()
    vendor = {"resourceType": "DiagnosticReport", "id": "vendor-1", "status": "preliminary", "meta": {"security": [AIAST]},
              "identifier": [{"system": "urn:acc", "value": "A1"}], "code": {"text": "x"}}
    store.update(vendor)
    signed_copy = {"resourceType": "DiagnosticReport", "id": "s-A1", "status": "final",
                   "identifier": [{"system": "urn:acc", "value": "A1"}], "code": {"text": "x"}}
    store.update(signed_copy)  # the signed report itself in the same server: not an AI draft, not counted
    before = store.all("DiagnosticReport")
    service, _, producer = _run([signed()], store)
    assert store.all("DiagnosticReport") == before and producer.acked == []
    assert _count(service, "not_radbridge") == 1 and _count(service, "not_found") == 0


def test_same_accession_value_from_another_system_is_not_the_same_study():
    store = MemoryFhirStore()
    _run([prelim()], store)
    doc = json.loads(signed())
    doc["identifier"][0]["system"] = "urn:other-hospital"
    service, _, _ = _run([json.dumps(doc).encode()], store)
    assert _drafts(store)[0]["status"] == "preliminary" and _count(service, "not_found") == 1


def test_store_down_during_retirement_backs_off_commits_nothing_then_retires_once():
    store = MemoryFhirStore()
    _run([prelim()], store)
    real_search, calls = store.search, []

    def flaky_search(rtype, params):
        calls.append(rtype)
        if len(calls) == 1:
            raise StoreUnavailable("FHIR server unreachable on GET (ConnectError)")
        return real_search(rtype, params)

    store.search = flaky_search
    service, consumer, producer = _service([signed()], store)
    commits_at_failure = []
    original_wait = service._wait_out

    def wait_out(stage, exc):
        commits_at_failure.append(len(consumer.commits))
        return original_wait(stage, exc)

    service._wait_out = wait_out
    service.run()
    assert commits_at_failure == [0] and consumer.commits[-1] == {T0: 1}
    assert _drafts(store)[0]["status"] == RETIRED_STATUS
    assert _count(service, "retired") == 1 and len(_retirement_records(producer)) == 1


def test_kafka_losing_the_notice_resends_it_before_the_commit():
    store = MemoryFhirStore()
    _run([prelim()], store)
    service, consumer, producer = _run([signed()], store, FakeProducer(fail_first=1))
    assert len(_retirement_records(producer)) == 1 and len([s for s in producer.sent if s[0] == "out"]) == 2
    assert _count(service, "retired") == 1 and _count(service, "already_retired") == 1  # the retry found it retired
    assert consumer.commits == [{T0: 1}]


def test_a_permanent_refusal_is_counted_and_logged_not_a_poison_pill():
    store = MemoryFhirStore()
    _run([prelim()], store)

    def refuse(bundle):
        raise StoreRejected("FHIR server answered HTTP 403 to POST")

    store.transact = refuse
    service, consumer, producer = _run([signed(), signed("A2")], store)
    assert producer.acked == [] and consumer.commits[-1] == {T0: 2}  # never dead-lettered, the partition moves on
    assert _count(service, "rejected") == 1 and _count(service, "not_found") == 1


def test_without_a_fhir_server_nothing_is_retired_or_published():
    service, consumer, producer = _run([prelim(), signed()], None)
    assert [dict(h)["content-type"] for t, _, _, h in producer.acked] == [b"application/fhir+json"]
    assert consumer.commits[-1] == {T0: 2}


def test_the_retirement_transaction_is_valid_fhir_r4():
    store = MemoryFhirStore()
    _run([prelim()], store)
    (draft,) = _drafts(store)
    from datetime import datetime, timezone

    (outcome,) = Drafter(InstantGenerator()).process([Envelope(signed())])
    bundle = retirement_bundle(draft, outcome.retire[0].signed, recorded=datetime(2026, 1, 2, tzinfo=timezone.utc))
    validate_bundle(bundle)
    assert bundle["entry"][0]["request"] == {"method": "PUT", "url": f"DiagnosticReport/{draft['id']}", "ifMatch": 'W/"1"'}


def test_http_store_maps_412_to_a_version_conflict_and_other_4xx_to_a_rejection():
    import httpx
    import pytest

    from radbridge.adapters.fhir_server.store import HttpFhirStore
    from radbridge.errors import VersionConflict

    def answer(request):
        code = 412 if request.headers.get("x-case") == "stale" else 409
        return httpx.Response(code, json={"resourceType": "OperationOutcome", "issue": [{"code": "conflict"}]})

    store = HttpFhirStore("http://fhir.test/fhir", transport=httpx.MockTransport(answer))
    store._client.headers["x-case"] = "stale"
    with pytest.raises(VersionConflict):
        store.transact({"resourceType": "Bundle", "type": "transaction", "entry": []})
    store._client.headers["x-case"] = "other"
    with pytest.raises(StoreRejected) as refused:
        store.transact({"resourceType": "Bundle", "type": "transaction", "entry": []})
    assert not isinstance(refused.value, VersionConflict)


def test_draft_and_signed_report_in_one_batch_retire_in_order():
    store = MemoryFhirStore()
    service, consumer, producer = _service([prelim(), signed()], store)
    service.batch_size = 8
    service.run()
    assert _drafts(store)[0]["status"] == RETIRED_STATUS and _count(service, "retired") == 1
    assert [dict(h)["content-type"] for t, _, _, h in producer.acked] == [b"application/fhir+json", b"application/json"]
    assert consumer.commits[-1] == {T0: 2}
