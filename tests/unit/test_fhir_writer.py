"""Draft -> FHIR R4 transaction Bundle: content, AI labelling, determinism, validation with fhir.resources R4B."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from radbridge.formats.fhir.writer import GENERATION_EXT, build_bundle, bundle_bytes, validate_bundle
from radbridge.domain import Coding, Draft, GenerationParams, Identifier, ModelInfo, Report, SourceRef
from radbridge.errors import ConfigurationError, UnsupportedContent
from radbridge.ids import DRAFT_SYSTEM, MODEL_CARD_SYSTEM, SOURCE_SYSTEM, device_id, message_control_id, resource_uuid

RECORDED = datetime(2025, 3, 4, 10, 30, tzinfo=timezone.utc)
FINDINGS = "Heart size is normal. The lungs are clear without focal consolidation."
MODEL = ModelInfo(
    backend="tgi",
    base_model="meta-llama/Llama-2-7b-chat-hf",
    base_model_sha256="a" * 64,
    adapter="radiology-llama2-lora",
    adapter_sha256="b" * 64,
    server_version="3.3.6",
)


def make_draft(
    message: bytes = b"MSH|message one",
    *,
    index: int = 0,
    impression: str = "No acute cardiopulmonary abnormality.",
    model: ModelInfo = MODEL,
    **report_fields,
) -> Draft:
    source = SourceRef(format="hl7v2", sha256=hashlib.sha256(message).hexdigest(), message_id="MSG00042", index=index)
    fields = dict(
        status="preliminary",
        procedure=Coding("LN", "36643-5", "XR Chest 2 Views"),
        patient=Identifier("555-44", "HOSP", "MR"),
        identifiers=(Identifier("ACC-9", "RIS", "ACSN"), Identifier("ORD-1", "EHR", "PLAC"), Identifier("RPT-7", "RIS")),
        effective=datetime(2025, 3, 4, 9, 15, tzinfo=timezone(timedelta(hours=2))),
        findings=FINDINGS,
    )
    fields.update(report_fields)
    return Draft(
        report=Report(source=source, **fields),
        impression=impression,
        prompt_version="paper-v1+indication",
        model=model,
        params=GenerationParams(max_new_tokens=64, seed=7),
        finish_reason="eos_token",
    )


def resources(bundle: dict, rtype: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def test_bundle_validates_with_r4b_models():
    bundle = build_bundle(make_draft(), recorded=RECORDED, validate=True)
    validate_bundle(bundle)
    assert bundle["type"] == "transaction"
    # the R4B model agrees on what it parsed (not just "no exception")
    from fhir.resources.R4B.bundle import Bundle

    parsed = Bundle.model_validate(bundle)
    assert parsed.entry[0].resource.status == "preliminary"


def test_validation_catches_a_broken_bundle():
    bundle = build_bundle(make_draft(), recorded=RECORDED)
    del bundle["entry"][0]["resource"]["code"]
    with pytest.raises(ValidationError):
        validate_bundle(bundle)


def test_diagnostic_report_content():
    d = make_draft()
    (dr,) = resources(build_bundle(d, recorded=RECORDED), "DiagnosticReport")
    assert dr["status"] == "preliminary"
    assert dr["conclusion"] == "No acute cardiopulmonary abnormality."
    assert dr["meta"]["security"] == [
        {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
            "code": "AIAST",
            "display": "Artificial Intelligence asserted",
        }
    ]
    assert dr["category"][0]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
        "code": "RAD",
        "display": "Radiology",
    }
    # v2 coding system name LN is written as the LOINC URI
    assert dr["code"]["coding"] == [{"system": "http://loinc.org", "code": "36643-5", "display": "XR Chest 2 Views"}]
    assert dr["issued"] == "2025-03-04T10:30:00+00:00"
    assert dr["effectiveDateTime"] == "2025-03-04T09:15:00+02:00"
    # radbridge's own identifier first, then the order-level ones; the source's report id is not copied
    assert dr["identifier"][0] == {"system": DRAFT_SYSTEM, "value": d.report.source.key}
    values = [i["value"] for i in dr["identifier"]]
    assert values == [d.report.source.key, "ACC-9", "ORD-1"]
    # a v2 assigning authority is not a URI: kept as the assigner, not as Identifier.system
    assert dr["identifier"][1]["assigner"] == {"display": "RIS"}
    assert "system" not in dr["identifier"][1]
    assert dr["subject"] == {
        "type": "Patient",
        "identifier": {
            "value": "555-44",
            "assigner": {"display": "HOSP"},
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
        },
    }
    assert dr["basedOn"][0]["type"] == "ServiceRequest"
    assert dr["basedOn"][0]["identifier"]["value"] == "ACC-9"


def test_findings_are_not_copied_and_narrative_warns_the_reader():
    d = make_draft(impression="Cardiomegaly <mild> & small effusion.\nFollow-up advised.")
    data = bundle_bytes(build_bundle(d, recorded=RECORDED))
    assert FINDINGS.encode() not in data
    (dr,) = resources(json.loads(data), "DiagnosticReport")
    div = dr["text"]["div"]
    assert "AI-generated draft; requires radiologist review." in div
    assert "Cardiomegaly &lt;mild&gt; &amp; small effusion.<br/>Follow-up advised." in div
    assert dr["text"]["status"] == "generated"


def test_literal_references_from_the_source_are_kept():
    d = make_draft(patient_reference="Patient/p-1", based_on=("ServiceRequest/sr-1",))
    (dr,) = resources(build_bundle(d, recorded=RECORDED), "DiagnosticReport")
    assert dr["subject"] == {"reference": "Patient/p-1"}
    assert dr["basedOn"] == [{"reference": "ServiceRequest/sr-1"}]


def test_missing_procedure_gets_generic_imaging_code():
    (dr,) = resources(build_bundle(make_draft(procedure=None), recorded=RECORDED), "DiagnosticReport")
    assert dr["code"]["coding"] == [{"system": "http://loinc.org", "code": "18748-4", "display": "Diagnostic imaging study"}]
    named = make_draft(procedure=Coding(display="CT head without contrast"))
    (dr,) = resources(build_bundle(named, recorded=RECORDED), "DiagnosticReport")
    assert dr["code"]["coding"][0]["code"] == "18748-4"
    assert dr["code"]["text"] == "CT head without contrast"


@pytest.mark.parametrize("status", ["preliminary", "partial"])
def test_configurable_draft_status(status):
    bundle = build_bundle(make_draft(), status=status, recorded=RECORDED, validate=True)
    assert resources(bundle, "DiagnosticReport")[0]["status"] == status


@pytest.mark.parametrize("status", ["final", "amended", "corrected", "appended", "Final", "registered"])
def test_never_final(status):
    with pytest.raises(ConfigurationError):
        build_bundle(make_draft(), status=status, recorded=RECORDED)  # type: ignore[arg-type]


def test_empty_draft_is_refused():
    with pytest.raises(UnsupportedContent):
        build_bundle(make_draft(impression="  \n "), recorded=RECORDED)


def test_provenance_names_model_adapter_template_and_parameters():
    d = make_draft()
    bundle = build_bundle(d, recorded=RECORDED)
    (prov,) = resources(bundle, "Provenance")
    (device,) = resources(bundle, "Device")
    dr_entry, prov_entry, device_entry = bundle["entry"]

    assert prov["target"] == [{"reference": dr_entry["fullUrl"]}]
    assert prov["recorded"] == "2025-03-04T10:30:00+00:00"
    assert prov["activity"]["coding"][0]["code"] == "CREATE"
    (agent,) = prov["agent"]
    assert agent["type"]["coding"][0]["code"] == "author"
    assert agent["who"]["reference"] == device_entry["fullUrl"]
    assert prov["policy"] == ["urn:radbridge:prompt-template:paper-v1+indication"]
    message, *report_ids, card = prov["entity"]
    assert message["role"] == "source"
    assert message["what"]["identifier"] == {"system": SOURCE_SYSTEM, "value": d.report.source.sha256}
    assert message["what"]["display"] == "HL7v2 ORU^R01 MSG00042 report 1"
    # an HL7 v2 source report has no FHIR address: the Provenance carries its identifiers (accession first)
    assert [e["what"]["identifier"]["value"] for e in report_ids] == ["ACC-9", "ORD-1", "RPT-7"]
    assert all(e["role"] == "source" and e["what"]["type"] == "DiagnosticReport" for e in report_ids)
    assert card["role"] == "derivation"
    assert card["what"]["identifier"] == {"system": MODEL_CARD_SYSTEM, "value": "b" * 64}

    (ext,) = prov["extension"]
    assert ext["url"] == GENERATION_EXT
    params = {e["url"]: next(v for k, v in e.items() if k.startswith("value")) for e in ext["extension"]}
    assert params["max_new_tokens"] == 64
    assert params["seed"] == 7
    assert params["do_sample"] is False
    assert params["backend"] == "tgi"
    assert params["finish_reason"] == "eos_token"

    assert device["id"] == device_id(MODEL)
    assert [n["name"] for n in device["deviceName"]] == ["meta-llama/Llama-2-7b-chat-hf", "radiology-llama2-lora"]
    assert {v["type"]["text"]: v["value"] for v in device["version"]} == {
        "base-model-sha256": "a" * 64,
        "adapter-sha256": "b" * 64,
        "model-server": "3.3.6",
    }
    assert device_entry["request"] == {"method": "PUT", "url": f"Device/{device['id']}"}
    bf16 = make_draft(model=replace(MODEL, numerics="bfloat16"))
    (bf16_device,) = resources(build_bundle(bf16, recorded=RECORDED), "Device")
    assert {v["type"]["text"]: v["value"] for v in bf16_device["version"]}["numerics"] == "bfloat16"
    # AI Transparency on FHIR: an AI Device, pointing at its model card
    assert device["type"]["coding"][0]["code"] == "Artificial-Intelligence"
    assert device["extension"][0]["valueReference"]["identifier"]["value"] == "b" * 64


def test_conditional_requests():
    d = make_draft()
    dr_entry, prov_entry, _ = build_bundle(d, recorded=RECORDED)["entry"]
    key = d.report.source.key
    assert dr_entry["request"] == {
        "method": "POST",
        "url": "DiagnosticReport",
        "ifNoneExist": f"identifier=urn:radbridge:draft|{key}",
    }
    assert prov_entry["request"]["ifNoneExist"] == f"_tag=urn:radbridge:draft|{key}"
    assert prov_entry["resource"]["meta"]["tag"] == [{"system": DRAFT_SYSTEM, "code": key}]


def test_same_input_same_bytes():
    first = bundle_bytes(build_bundle(make_draft(), recorded=RECORDED))
    second = bundle_bytes(build_bundle(make_draft(), recorded=RECORDED))
    assert first == second
    # canonical: key order in the dict does not matter
    shuffled = json.loads(first, object_pairs_hook=lambda pairs: dict(reversed(pairs)))
    assert bundle_bytes(shuffled) == first


def test_different_source_different_ids():
    a = build_bundle(make_draft(b"message one"), recorded=RECORDED)
    b = build_bundle(make_draft(b"message two"), recorded=RECORDED)
    urls_a = {e["fullUrl"] for e in a["entry"][:2]}
    urls_b = {e["fullUrl"] for e in b["entry"][:2]}
    assert not urls_a & urls_b
    assert a["entry"][0]["request"]["ifNoneExist"] != b["entry"][0]["request"]["ifNoneExist"]
    # same model: the Device is shared
    assert a["entry"][2]["fullUrl"] == b["entry"][2]["fullUrl"]
    other_adapter = replace(MODEL, adapter_sha256="c" * 64)
    c = build_bundle(make_draft(model=other_adapter), recorded=RECORDED)
    assert c["entry"][2]["fullUrl"] != a["entry"][2]["fullUrl"]


def test_each_report_of_a_message_is_its_own_bundle():
    drafts = [make_draft(index=0), make_draft(index=1, impression="Small right pleural effusion.")]
    bundles = [build_bundle(d, recorded=RECORDED, validate=True) for d in drafts]
    for bundle in bundles:
        assert [e["resource"]["resourceType"] for e in bundle["entry"]] == ["DiagnosticReport", "Provenance", "Device"]
    second = bundles[1]
    (dr,) = resources(second, "DiagnosticReport")
    (prov,) = resources(second, "Provenance")
    assert dr["conclusion"] == "Small right pleural effusion."
    assert prov["target"][0]["reference"] == second["entry"][0]["fullUrl"]
    assert second["entry"][0]["fullUrl"] == "urn:uuid:" + resource_uuid(drafts[1].report.source.key, "DiagnosticReport")
    assert prov["entity"][0]["what"]["display"].endswith("report 2")
    # the Device is the same resource in both (a PUT of the same id): one per model, not per Bundle
    assert bundles[0]["entry"][-1] == bundles[1]["entry"][-1]


def test_naive_datetimes():
    d = make_draft(effective=datetime(2025, 3, 4, 9, 15))
    bundle = build_bundle(d, recorded=datetime(2025, 3, 4, 10, 30), validate=True)
    (dr,) = resources(bundle, "DiagnosticReport")
    assert dr["effectiveDateTime"] == "2025-03-04"  # no invented offset for a clinical time
    assert dr["issued"] == "2025-03-04T10:30:00+00:00"


def test_message_control_id_fits_msh10():
    key = make_draft().report.source.key
    assert message_control_id(key) == message_control_id(key)
    assert len(message_control_id(key)) == 20
    assert message_control_id(key) != message_control_id(make_draft(index=1).report.source.key)


def test_bundle_local_references_from_the_source_are_not_copied():
    # urn:uuid fullUrls of the source Bundle and #contained ids mean nothing in our transaction
    d = make_draft(patient_reference="urn:uuid:7d1c0f5e-0000-4000-8000-000000000001", based_on=("#order",))
    (dr,) = resources(build_bundle(d, recorded=RECORDED), "DiagnosticReport")
    assert dr["subject"]["identifier"]["value"] == "555-44"
    assert dr["basedOn"][0]["identifier"]["value"] == "ACC-9"
    no_patient = make_draft(patient=None, patient_reference="urn:uuid:7d1c0f5e-0000-4000-8000-000000000001")
    (dr,) = resources(build_bundle(no_patient, recorded=RECORDED), "DiagnosticReport")
    assert "subject" not in dr


def test_ids_are_frozen():
    # Changing how ids are derived would make every replay of old messages create duplicates.
    assert resource_uuid("0123456789abcdef0123456789abcdef-0", "DiagnosticReport") == "9f42b047-1d09-530d-a4f0-61eb3f354da5"
    assert device_id(ModelInfo(backend="local", base_model="m")) == "93ca5b18-a721-5d53-a6af-bc168e7192f0"
    # other numerics are another Device (they word some drafts differently); float32 keeps the id above
    assert device_id(ModelInfo(backend="local", base_model="m", numerics="bfloat16")) != device_id(
        ModelInfo(backend="local", base_model="m"))
    assert message_control_id("0123456789abcdef0123456789abcdef-0") == "RB83ae7c4b67577cce7c"


def test_fhir_source_report_is_referenced_and_its_encounter_and_study_carried():
    d = make_draft(report_reference="DiagnosticReport/src-1", encounter_reference="Encounter/e-9",
                   imaging_studies=("ImagingStudy/s-3", "urn:uuid:0000"))
    bundle = build_bundle(d, recorded=RECORDED, validate=True)
    (dr,) = resources(bundle, "DiagnosticReport")
    assert dr["encounter"] == {"reference": "Encounter/e-9"}
    assert dr["imagingStudy"] == [{"reference": "ImagingStudy/s-3"}]  # a Bundle-local urn means nothing outside it
    (prov,) = resources(bundle, "Provenance")
    assert {"role": "source", "what": {"reference": "DiagnosticReport/src-1"}} in prov["entity"]


def test_each_checker_flag_is_a_detected_issue_implicating_the_draft():
    from radbridge.verify import check

    flags = check("Right pleural effusion.", "Large left pleural effusion. Small right apical pneumothorax.").flags
    d = replace(make_draft(impression="Right pleural effusion."), flags=flags)
    bundle = build_bundle(d, recorded=RECORDED, validate=True)
    (dr_entry,) = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]
    issues = resources(bundle, "DetectedIssue")
    assert [(i["code"]["coding"][0]["code"], i["severity"]) for i in issues] == [
        ("laterality", "high"), ("omission", "moderate")
    ]
    for issue in issues:
        assert issue["implicated"] == [{"reference": dr_entry["fullUrl"]}]
        assert issue["status"] == "preliminary" and "effusion" not in issue["detail"].split(":")[0]
        assert "Large" not in issue["detail"] and "apical" not in issue["detail"]
    assert resources(build_bundle(make_draft(), recorded=RECORDED), "DetectedIssue") == []
