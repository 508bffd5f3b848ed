"""The pipeline core on in-memory adapters: policy, batching, error isolation, determinism."""

import json
from datetime import datetime, timezone

import pytest

from radbridge import samples
from radbridge.formats.fhir.writer import bundle_bytes
from radbridge.adapters.model.memory import InstantGenerator
from radbridge.domain import Generation, ModelInfo, SkipReason
from radbridge.errors import GenerationRejected, GeneratorUnavailable, MalformedMessage
from radbridge.pipeline import Drafter, Envelope, Mode
from radbridge.prompt import PromptTemplate

REPORT = {
    "uid": 900001,
    "findings": "Heart size is normal. There is a small left pleural effusion. No pneumothorax.",
    "impression": "Small left pleural effusion.",
    "indication": "Shortness of breath",
}
LAB = (
    b"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ORU^R01|LAB1|P|2.5.1\r"
    b"PID|1||P1^^^HOSP^MR\r"
    b"OBR|1|O1|F1|2345-7^Glucose^LN|||20240101110000\r"
    b"OBX|1|NM|2345-7^Glucose^LN||182|mg/dL|70-105|H|||F\r"
)


def hl7(status="P", uid=900001, **overrides):
    return samples.to_hl7v2({**REPORT, "uid": uid, **overrides}, status=status, with_impression=status == "F")


def test_radiology_message_becomes_a_preliminary_ai_labelled_draft():
    [out] = Drafter(InstantGenerator()).process([Envelope(hl7())])
    assert out.status == "drafted" and out.format == "hl7v2" and out.message_ids == ("OPENI900001",)
    [draft] = out.drafts
    assert draft.report.findings.startswith("Heart size is normal.")
    assert draft.prompt_version == "paper-v1"
    reports = [e["resource"] for e in out.bundles[0]["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]
    assert [r["status"] for r in reports] == ["preliminary"]
    assert reports[0]["conclusion"] == draft.impression
    assert any(s.get("code") == "AIAST" for s in reports[0]["meta"]["security"])


def test_live_mode_skips_signed_reports_and_replay_drafts_them_without_touching_the_source():
    signed = Envelope(hl7(status="F"))
    [live] = Drafter(InstantGenerator(), mode=Mode.LIVE).process([signed])
    assert live.status == "skipped" and live.skipped[0].reason is SkipReason.ALREADY_SIGNED
    [replay] = Drafter(InstantGenerator(), mode=Mode.REPLAY).process([signed])
    assert replay.status == "drafted"
    dr = next(e for e in replay.bundles[0]["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
    assert dr["resource"]["status"] == "preliminary"
    assert dr["request"]["method"] == "POST" and "ifNoneExist" in dr["request"]  # a new resource, never an update


def test_one_bad_message_does_not_hold_back_the_batch():
    outs = Drafter(InstantGenerator()).process(
        [Envelope(hl7(uid=1)), Envelope(b"this is not a message"), Envelope(LAB), Envelope(b'{"resourceType": '), Envelope(hl7(uid=2))]
    )
    assert [o.status for o in outs] == ["drafted", "rejected", "skipped", "rejected", "drafted"]
    assert isinstance(outs[1].error, MalformedMessage) and isinstance(outs[3].error, MalformedMessage)
    assert outs[2].skipped[0].reason is SkipReason.NOT_RADIOLOGY


def test_all_reports_of_a_batch_go_to_the_model_in_one_call():
    gen = InstantGenerator()
    Drafter(gen).process([Envelope(hl7(uid=i)) for i in range(5)])
    assert gen.calls == 1


def test_a_dependency_outage_fails_the_whole_batch_as_retryable():
    gen = InstantGenerator(fail_with=GeneratorUnavailable("model server down"))
    with pytest.raises(GeneratorUnavailable):
        Drafter(gen).process([Envelope(hl7())])


class RejectsMarked(InstantGenerator):
    """Like a model server answering 422 for one request of a batch."""

    def generate(self, prompts, params):
        if any("REJECTME" in p.user for p in prompts):
            raise GenerationRejected("input too long")
        return super().generate(prompts, params)


def test_a_rejected_prompt_is_isolated_to_its_own_message():
    outs = Drafter(RejectsMarked()).process(
        [Envelope(hl7(uid=1)), Envelope(hl7(uid=2, findings="REJECTME " + REPORT["findings"])), Envelope(hl7(uid=3))]
    )
    assert [o.status for o in outs] == ["drafted", "rejected", "drafted"]
    assert outs[1].error.kind == "generation_rejected"


class CrashesOnMarked(InstantGenerator):
    """A generator bug that one message triggers (here an IndexError, as from a tokenizer edge case)."""

    def generate(self, prompts, params):
        if any("CRASHME" in p.user for p in prompts):
            raise IndexError("index out of range in self")
        return super().generate(prompts, params)


def test_a_message_that_trips_a_generator_bug_is_dead_lettered_alone(caplog):
    outs = Drafter(CrashesOnMarked()).process(
        [Envelope(hl7(uid=1)), Envelope(hl7(uid=2, findings="CRASHME " + REPORT["findings"]), location="rad/0/7"),
         Envelope(hl7(uid=3))]
    )
    assert [o.status for o in outs] == ["drafted", "rejected", "drafted"]
    assert outs[1].error.kind == "generation_failed" and "IndexError" in str(outs[1].error)
    logged = " ".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert "rad/0/7" in logged and "IndexError" in logged and "test_pipeline.py:" in logged  # where it broke
    assert "CRASHME" not in logged and "pleural" not in logged  # no report text in the logs


def test_a_generator_that_fails_on_every_message_stops_the_batch_instead_of_dead_lettering_it():
    class Broken(InstantGenerator):
        def generate(self, prompts, params):
            raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        Drafter(Broken()).process([Envelope(hl7(uid=1)), Envelope(hl7(uid=2))])


class Empty(InstantGenerator):
    def generate(self, prompts, params):
        return [Generation(text="<|im_end|>") for _ in prompts]


def test_an_empty_generation_is_an_error_not_an_empty_draft():
    [out] = Drafter(Empty()).process([Envelope(hl7())])
    assert out.status == "rejected" and "empty" in str(out.error)


def test_same_input_same_output_bytes_but_for_the_time_the_draft_was_made():
    env = Envelope(hl7(), received_at=datetime(2024, 5, 1, tzinfo=timezone.utc))
    t1, t2 = datetime(2026, 1, 1, 9, tzinfo=timezone.utc), datetime(2026, 1, 1, 10, tzinfo=timezone.utc)
    a = Drafter(InstantGenerator(), clock=lambda: t1).process([env])[0]
    b = Drafter(InstantGenerator(), clock=lambda: t1).process([env])[0]
    assert bundle_bytes(a.bundles[0]) == bundle_bytes(b.bundles[0])
    later = Drafter(InstantGenerator(), clock=lambda: t2).process([env])[0]
    (dr,) = [e["resource"] for e in later.bundles[0]["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]
    assert dr["issued"] == "2026-01-01T10:00:00+00:00"  # when the draft was made, not the message's own time
    assert [e["fullUrl"] for e in later.bundles[0]["entry"]] == [e["fullUrl"] for e in a.bundles[0]["entry"]]
    assert bundle_bytes(later.bundles[0]).replace(b"T10:00:00", b"T09:00:00") == bundle_bytes(a.bundles[0])
    assert a.drafts[0].report.source.key == b.drafts[0].report.source.key  # the record key
    other = Drafter(InstantGenerator()).process([Envelope(hl7(uid=7))])[0]
    assert other.drafts[0].report.source.key != a.drafts[0].report.source.key


def test_fhir_and_hl7_share_one_pipeline():
    outs = Drafter(InstantGenerator()).process([Envelope(samples.to_fhir(REPORT)), Envelope(hl7())])
    assert [(o.format, o.status) for o in outs] == [("fhir", "drafted"), ("hl7v2", "drafted")]
    fhir_report = outs[0].drafts[0].report
    assert "small left pleural effusion" in fhir_report.findings


def test_example_template_requires_an_example_source():
    with pytest.raises(ValueError):
        Drafter(InstantGenerator(), template=PromptTemplate(n_examples=2))


def test_provenance_names_the_generator():
    class Named(InstantGenerator):
        @property
        def info(self):
            return ModelInfo(backend="local", base_model="base-x", base_model_sha256="ab" * 32, adapter="lora-y", adapter_sha256="cd" * 32)

    [out] = Drafter(Named()).process([Envelope(hl7())])
    text = json.dumps(out.bundles)
    assert "base-x" in text and "lora-y" in text and "ab" * 32 in text and "cd" * 32 in text


def test_copynormal_wording_is_recorded_in_provenance_and_the_hl7_note():
    from radbridge.formats.hl7v2.writer import build_oru
    from radbridge.prompt import Example

    class Nearest:  # ExampleSource: one normal report, very similar
        def examples_for(self, findings, k):
            return [Example("Heart size normal. Lungs clear.", "No acute cardiopulmonary abnormality.", 0.91, "rpt-17")]

    template = PromptTemplate(n_examples=1, show_similarity=True, copy_normal=True)
    [out] = Drafter(InstantGenerator(), template=template, examples=Nearest()).process([Envelope(hl7())])
    [draft] = out.drafts
    assert draft.impression == "No acute cardiopulmonary abnormality."  # every canned answer is normal
    assert draft.extra == {"wording": "nearest-example", "example_similarity": 0.91, "example_ref": "rpt-17"}
    prov = next(e["resource"] for e in out.bundles[0]["entry"] if e["resource"]["resourceType"] == "Provenance")
    parts = {p["url"]: p for p in prov["extension"][0]["extension"]}
    assert parts["wording"] == {"url": "wording", "valueString": "nearest-example"}
    assert parts["example_similarity"] == {"url": "example_similarity", "valueDecimal": 0.91}
    assert parts["example_ref"] == {"url": "example_ref", "valueString": "rpt-17"}  # which signed report
    note = build_oru(draft, recorded=datetime(2024, 1, 1, tzinfo=timezone.utc)).decode()
    assert "Wording taken from the most similar prior report" in note


def test_select_shows_the_nearest_examples_records_the_wording_and_says_so_in_the_hl7_note():
    from radbridge.formats.hl7v2.writer import build_oru
    from radbridge.prompt import Example

    asked = []

    class Nearest:  # ExampleSource: the 3 nearest, most similar last; every one names an effusion on the left
        def examples_for(self, findings, k):
            asked.append(k)
            return [Example(f"f{i}", "Small left pleural effusion.", 0.6 + i / 10, f"rpt-{i}") for i in range(k)]

    template = PromptTemplate(n_examples=1, show_similarity=True, select_from=3)
    drafter = Drafter(InstantGenerator(), template=template, examples=Nearest())
    report = samples.to_hl7v2({**REPORT, "uid": 5, "findings": "Small left pleural effusion. Heart size is normal."})
    [out] = drafter.process([Envelope(report)])
    assert asked == [3]  # one search serves the prompt and the selection
    [draft] = out.drafts
    assert drafter.prompt_for(draft.report).examples == (Example("f2", "Small left pleural effusion.", 0.8, "rpt-2"),)
    assert draft.impression == "Small left pleural effusion."  # the canned normal draft lost to the findings
    assert draft.extra["wording"] == "selected-example" and draft.model_text
    note = build_oru(draft, recorded=datetime(2024, 1, 1, tzinfo=timezone.utc)).decode()
    assert "agreed best with the others and with the findings" in note


def test_the_templates_end_threshold_travels_with_every_request():
    seen = []

    class Recording(InstantGenerator):
        def generate(self, prompts, params):
            seen.append(params)
            return super().generate(prompts, params)

    template = PromptTemplate.from_id("paper-v1+end90")
    assert template.end_threshold_pct == 90 and template.without_policy == PromptTemplate()
    drafter = Drafter(Recording(), template=template)
    assert drafter.params.end_threshold == 0.9
    [out] = drafter.process([Envelope(hl7())])
    assert seen and seen[0].end_threshold == 0.9
    assert out.drafts[0].params.end_threshold == 0.9  # the draft records how it was decoded
    assert Drafter(InstantGenerator()).params.end_threshold is None
    with pytest.raises(ValueError, match="percentage"):
        PromptTemplate.from_id("paper-v1+end100")


def test_the_openai_backend_is_refused_a_template_it_cannot_decode_as_measured():
    from radbridge.bootstrap import build_drafter
    from radbridge.errors import ConfigurationError
    from radbridge.settings import Settings

    settings = Settings(backend="openai", model_url="http://127.0.0.1:9", prompt_template="paper-v1+end90")
    with pytest.raises(ConfigurationError, match=r"\+end90.*local or tgi backend"):
        build_drafter(settings)
    # TGI applies the rule from its token details (tests/unit/test_generators_remote.py)
    tgi = build_drafter(Settings(backend="tgi", model_url="http://127.0.0.1:9", prompt_template="paper-v1+end90"))
    assert tgi.params.end_threshold == 0.9
