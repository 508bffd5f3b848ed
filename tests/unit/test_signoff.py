"""Sign-off feedback in the service: drafts read back from the FHIR store, compared with the signed impression,
published and counted (in-memory store, fake Kafka)."""

from __future__ import annotations

import json

from kafka.structs import TopicPartition

from report_messages import cxr_report
from radbridge.adapters.fhir_server.store import MemoryFhirStore
from radbridge.domain import Generation, ModelInfo
from radbridge.errors import StoreRejected
from radbridge.formats.fhir.writer import bundle_bytes
from radbridge.formats.hl7v2.reader import read_hl7v2
from radbridge.ids import DRAFT_SYSTEM
from radbridge.pipeline import Drafter
from radbridge.retry import RetryPolicy
from radbridge.service.backoff import Backoff
from radbridge.service.loop import Service
from radbridge.service.signoff import SignoffFeedback, flags_of, reader_pseudonym
from radbridge.settings import Settings
from radbridge.verify import FlagKind

from test_service_loop import FakeConsumer, FakeProducer

T0 = TopicPartition("in", 0)
FINDINGS = "Small left pleural effusion. Lungs otherwise clear. Distinctive-Findings-Text."
DRAFT = "Small right pleural effusion."  # the wrong side: the checker flags laterality


class ScriptedGenerator:
    """Always writes ``text``: the draft a test needs."""

    def __init__(self, text: str = DRAFT):
        self.text = text

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(backend="instant", base_model="base-x", adapter="adapter-v2")

    def check(self) -> None:
        return None

    def generate(self, prompts, params):
        return [Generation(text=self.text, finish_reason="eos_token", generated_tokens=4) for _ in prompts]


def _report(acc: str, status: str, rid: str, impression: str | None = None, reader: str | None = None) -> bytes:
    return cxr_report(acc, status, rid, impression, findings=FINDINGS, reader=reader)


def prelim(acc: str = "A1") -> bytes:
    return _report(acc, "preliminary", f"p-{acc}")


def signed(acc: str = "A1", impression: str | None = "Small left pleural effusion.", **kw) -> bytes:
    return _report(acc, "final", f"s-{acc}", impression=impression, **kw)


def _run(records: list[bytes], store, *, signoff=None, producer=None, text: str = DRAFT):
    consumer = FakeConsumer({T0: records})
    producer = producer or FakeProducer()
    service = Service(
        consumer=consumer, producer=producer, drafter=Drafter(ScriptedGenerator(text)),
        input_topics=["in"], output_topic="out", dlq_topic="dlq", serialize=bundle_bytes, fhir_store=store,
        batch_size=1, batch_wait_ms=0, backoff=Backoff(RetryPolicy(initial_s=0.01, max_s=0.02, jitter=0)),
        signoff=signoff if signoff is not None else SignoffFeedback("feedback"),
    )

    def hook(c):
        if all(not q for q in c.queues.values()) and not service._pending:
            service.stop()

    consumer.on_poll = hook
    service.run()
    return service, consumer, producer


def _feedback(producer) -> list[tuple[bytes, dict, bytes]]:
    return [(k, json.loads(v), v) for t, k, v, h in producer.acked if t == "feedback"]


def _n(service, outcome: str) -> float:
    return service.metrics.signoffs.labels(outcome)._value.get()


def _sample(service, name: str, labels: dict | None = None) -> float | None:
    return service.metrics.registry.get_sample_value(name, labels or {})


def test_a_corrected_side_is_a_light_edit_the_laterality_flag_acted_on_and_no_text_leaves():
    store = MemoryFhirStore()
    service, consumer, producer = _run([prelim(), signed()], store)

    ((key, record, raw),) = _feedback(producer)
    assert key.startswith(b"A1|")
    assert record["type"] == "signoff-feedback" and record["outcome"] == "light_edit"
    assert record["accession"] == {"system": "urn:acc", "value": "A1"} and record["procedure"] == "36643-5"
    (draft,) = record["drafts"]
    assert draft["verdict"] == "retired" and draft["draft"]["system"] == DRAFT_SYSTEM
    assert (draft["model"], draft["adapter"]) == ("base-x", "adapter-v2") and draft["template"]
    assert draft["edit_distance"] == 1 and draft["laterality_changed"] == ["Pleural Effusion"]
    assert draft["flags"] == [{"kind": "laterality", "observation": "Pleural Effusion", "acted_on": True}]
    for text in (b"Distinctive-Findings-Text", b"PATIENT-ID-77", b"pleural effusion.", b"Small"):
        assert text not in raw
    assert "reader" not in record  # per-reader figures are off by default
    assert _n(service, "light_edit") == 1
    assert _sample(service, "radbridge_signoff_flags_total", {"kind": "laterality", "acted_on": "true"}) == 1
    assert _sample(service, "radbridge_signoff_observations_total",
                   {"change": "laterality_changed", "observation": "Pleural Effusion"}) == 1
    assert _sample(service, "radbridge_signoff_edit_ratio_count") == 1
    assert consumer.commits[-1] == {T0: 2}


def test_an_unchanged_draft_is_accepted_and_an_added_finding_is_named():
    store = MemoryFhirStore()
    service, _, producer = _run(
        [prelim("A1"), signed("A1", "Small right pleural effusion!"),
         prelim("A2"), signed("A2", "Small right pleural effusion. Cardiomegaly.")], store)
    (_, first, _), (_, second, _) = _feedback(producer)
    assert first["outcome"] == "accepted" and first["drafts"][0]["flags"][0]["acted_on"] is False
    assert second["drafts"][0]["added"] == ["Cardiomegaly"]
    assert _sample(service, "radbridge_signoff_observations_total", {"change": "added", "observation": "Cardiomegaly"}) == 1
    assert _n(service, "accepted") == 1
    assert _sample(service, "radbridge_signoff_flags_total", {"kind": "laterality", "acted_on": "false"}) == 2


def test_a_replaced_draft():
    store = MemoryFhirStore()
    _, _, producer = _run([prelim(), signed(impression="Right upper lobe mass, recommend CT chest.")], store)
    ((_, record, _),) = _feedback(producer)
    assert record["outcome"] == "replaced" and "Lung Lesion" in record["drafts"][0]["added"]


def test_a_redelivered_sign_off_repeats_the_same_record_and_is_counted_once():
    store = MemoryFhirStore()
    signoff = SignoffFeedback("feedback")
    _, _, first = _run([prelim(), signed()], store, signoff=signoff)
    service, _, again = _run([signed()], store, signoff=signoff)
    assert [r[::2] for r in _feedback(again)] == [r[::2] for r in _feedback(first)]  # same key, same bytes
    assert _n(service, "light_edit") == 0  # this instance's second service: nothing new counted


def test_a_redelivery_in_one_instance_is_counted_once():
    store = MemoryFhirStore()
    service, _, producer = _run([prelim(), signed(), signed()], store)
    assert len({k for k, _, _ in _feedback(producer)}) == 1
    assert _n(service, "light_edit") == 1


def test_a_signed_report_without_a_draft_is_no_draft():
    service, _, producer = _run([signed()], MemoryFhirStore())
    ((_, record, _),) = _feedback(producer)
    assert record["outcome"] == "no_draft" and record["drafts"] == []
    assert _n(service, "no_draft") == 1


def test_a_signed_report_without_impression_is_counted_apart():
    service, _, producer = _run([prelim(), signed(impression=None)], MemoryFhirStore())
    ((_, record, _),) = _feedback(producer)
    assert record["outcome"] == "no_impression" and record["drafts"] == []
    assert _n(service, "no_impression") == 1


def test_a_draft_the_radiologist_signed_itself_is_compared_as_accepted():
    store = MemoryFhirStore()
    _run([prelim()], store)
    (draft,) = store.all("DiagnosticReport")
    store.update({**draft, "status": "final"})
    _, _, producer = _run([signed(impression=DRAFT)], store)
    ((_, record, _),) = _feedback(producer)
    assert record["outcome"] == "accepted" and record["drafts"][0]["verdict"] == "signed_as_draft"


def test_without_a_topic_nothing_is_published_but_it_is_counted():
    service, _, producer = _run([prelim(), signed()], MemoryFhirStore(), signoff=SignoffFeedback())
    assert _feedback(producer) == [] and _n(service, "light_edit") == 1


def test_without_a_fhir_server_the_sign_off_is_counted_as_no_store():
    service, _, producer = _run([prelim(), signed()], None)
    assert _feedback(producer) == [] and _n(service, "no_store") == 1


def test_a_store_refusing_the_reads_costs_the_feedback_not_the_signed_report():
    store = MemoryFhirStore()
    _run([prelim()], store)
    search = store.search

    def refuse_detected_issues(rtype, params):
        if rtype == "DetectedIssue":
            raise StoreRejected("no")
        return search(rtype, params)

    store.search = refuse_detected_issues
    service, consumer, producer = _run([signed()], store)
    assert _feedback(producer) == [] and _n(service, "error") == 1
    assert consumer.commits[-1] == {T0: 1}
    assert not [r for t, _, _, _ in producer.acked if t == "dlq" for r in [t]]


def test_per_reader_figures_only_when_enabled_and_pseudonymous():
    store = MemoryFhirStore()
    on = SignoffFeedback("feedback", reader_secret=b"site-key")
    service, _, producer = _run([prelim(), signed(reader="Practitioner/dr-jones")], store, signoff=on)
    ((_, record, raw),) = _feedback(producer)
    assert record["reader"] == reader_pseudonym("Practitioner/dr-jones", b"site-key") and b"jones" not in raw
    assert _sample(service, "radbridge_signoff_by_reader_total", {"reader": record["reader"], "outcome": "light_edit"}) == 1
    assert reader_pseudonym("Practitioner/dr-jones", b"other-key") != record["reader"]

    off = SignoffFeedback.from_settings(Settings(feedback_topic="feedback", feedback_reader_key="k"))
    assert off.reader_secret is None  # a key alone does not enable it
    enabled = SignoffFeedback.from_settings(Settings(feedback_per_reader=True, feedback_reader_key="k"))
    assert enabled.reader_secret == b"k" and enabled.topic is None


def test_flags_are_read_back_from_the_detected_issues():
    store = MemoryFhirStore()
    _run([prelim()], store)
    (draft,) = store.all("DiagnosticReport")
    key = draft["identifier"][0]["value"]
    assert [(f.kind, f.observation) for f in flags_of(store, key)] == [(FlagKind.LATERALITY, "Pleural Effusion")]
    assert flags_of(store, "another-key") == ()


def test_hl7v2_reader_takes_the_interpreter_id_from_obr_32():
    msg = (
        "MSH|^~\\&|RIS|H|EHR|H|20240101120000||ORU^R01|M1|P|2.5\r"
        "PID|1||MRN1\r"
        "OBR|1|PL1|ACC1|71046^XR CHEST 2V|||20240101110000|||||||||||||||||RAD|F|||||||1234&Jones&Ann\r"
        "OBX|1|TX|18782-3^FINDINGS||Lungs clear.||||||F\r"
    ).encode()
    (report,) = read_hl7v2(msg)
    assert report.interpreter == "1234"
