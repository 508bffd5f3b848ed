"""FHIR R4 DiagnosticReport reader: every reference file, our own fixtures, and OpenI reports wrapped as FHIR."""

from __future__ import annotations

import base64
import copy
import html
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from pdf_helpers import text_pdf

from radbridge import samples
from radbridge.formats.fhir.reader import html_to_text, read_fhir
from radbridge.domain import Report, SkipReason, Skipped, sha256_of
from radbridge.errors import MalformedMessage

HERE = Path(__file__).resolve()
REF = HERE.parents[2].parent / "shared" / "fixtures-ref" / "fhir"
OWN = HERE.parents[1] / "fixtures" / "fhir"
LOINC = "http://loinc.org"


def ref_bytes(name: str) -> bytes:
    return (REF / name).read_bytes()


def own_bytes(name: str) -> bytes:
    return (OWN / name).read_bytes()


def only_report(items: list) -> Report:
    assert len(items) == 1 and isinstance(items[0], Report), items
    return items[0]


def b64(text: str, encoding: str = "utf-8") -> str:
    return base64.b64encode(text.encode(encoding)).decode()


def squash(text: str | None) -> str:
    return " ".join((text or "").split())


# -- every reference file -----------------------------------------------------------------------------------

NOT_RAD = ("skip", SkipReason.NOT_RADIOLOGY)
EXPECTED = {
    "uscore_DiagnosticReport-chest-xray-report.json": [("report", None)],
    # Companion Observations of the chest X-ray: a lone Observation is not a report.
    "uscore_companion_Observation-xray-chest-findings.json": [("skip", SkipReason.NOT_A_RESULT)],
    "uscore_companion_Observation-xray-chest-impression.json": [("skip", SkipReason.NOT_A_RESULT)],
    # EKG panel under the Cardiology category: decided not radiology (no imaging in category or code).
    "uscore_DiagnosticReport-cardiology-report.json": [NOT_RAD],
    # Radiology with a signed conclusion but no findings text anywhere (its narrative is generated).
    "gcp_R4_DiagnosticReport-f201-ct-head-neck.json": [("skip", SkipReason.NO_FINDINGS)],
    "r4spec-ibm_diagnosticreport-example-ultrasound.json": [("skip", SkipReason.NO_FINDINGS)],
    "msconv_Bundle-batch_ORU-R01-RMGEAD-expected.json": [NOT_RAD],
    "msconv_Bundle-batch_ORU-R01-01-expected.json": [NOT_RAD, NOT_RAD, NOT_RAD],
    "gcp_Bundle-transaction_oru_r01_ex6-output.json": [NOT_RAD],
}


def test_every_reference_file_has_an_expected_outcome():
    assert sorted(p.name for p in REF.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reference_file_outcome(name):
    data = ref_bytes(name)
    items = read_fhir(data, location=f"fixtures-ref/fhir/{name}")
    got = [("report", None) if isinstance(i, Report) else ("skip", i.reason) for i in items]
    assert got == EXPECTED[name]
    for n, item in enumerate(items):
        assert item.source.format == "fhir"
        assert item.source.sha256 == sha256_of(data)
        assert item.source.index == n
        assert item.source.location == f"fixtures-ref/fhir/{name}"
        assert item.source.message_id


def test_uscore_chest_xray_alone_reads_the_xhtml_presented_form():
    r = only_report(read_fhir(ref_bytes("uscore_DiagnosticReport-chest-xray-report.json")))
    assert r.status == "final" and r.is_signed
    assert (r.procedure.system, r.procedure.code) == (LOINC, "30746-2")
    assert r.patient_reference == "Patient/example" and r.patient is None
    assert r.source.message_id == "chest-xray-report"
    assert r.source.message_time == datetime(2019, 2, 4, 19, 43, 30, tzinfo=timezone.utc)
    assert r.effective == datetime(2019, 2, 3, 19, 43, 30, tzinfo=timezone.utc)
    assert r.findings.startswith("LINES AND TUBES: None.\nLUNGS AND PLEURA:\nClear lungs.")
    assert "No pneumothorax." in r.findings and "Heart is normal in size." in r.findings
    assert r.comparison == "None."
    # The sign-off block (names of the radiologist and transcriptionist) must not reach the prompt.
    assert r.impression == "No acute abnormality."
    for text in (r.findings, r.impression, r.comparison, r.indication or ""):
        assert "Cure" not in text and "Dictated" not in text and "WSN" not in text
    # Unreadable or absent parts are named, not silently dropped.
    assert "DiagnosticReport.result[0] Observation/xray-chest-findings: not in this message" in r.unmapped
    assert "DiagnosticReport.result[1] Observation/xray-chest-impression: not in this message" in r.unmapped
    assert any(u.startswith("DiagnosticReport.media[0] Media/chest-xray") for u in r.unmapped)
    assert "DiagnosticReport.performer (1)" in r.unmapped
    # "INDICATION/CLINICAL QUESTION:" is a compound heading: wherever it lands, it must not pollute findings.
    assert "Fever" not in r.findings
    assert (r.indication and "Fever" in r.indication) or any("before the first heading" in u for u in r.unmapped)


def test_uscore_chest_xray_in_a_bundle_reads_the_companion_observations():
    dr = json.loads(ref_bytes("uscore_DiagnosticReport-chest-xray-report.json"))
    findings = json.loads(ref_bytes("uscore_companion_Observation-xray-chest-findings.json"))
    impression = json.loads(ref_bytes("uscore_companion_Observation-xray-chest-impression.json"))
    base = "https://fhir.example.org/r4"
    bundle = {
        "resourceType": "Bundle",
        "id": "assembled-at-test-time",
        "type": "collection",
        "timestamp": "2019-02-05T08:00:00Z",
        "entry": [
            {"fullUrl": f"{base}/DiagnosticReport/{dr['id']}", "resource": dr},
            # absolute fullUrls: the DR's relative "Observation/id" references must still resolve
            {"fullUrl": f"{base}/Observation/{findings['id']}", "resource": findings},
            {"fullUrl": f"{base}/Observation/{impression['id']}", "resource": impression},
        ],
    }
    r = only_report(read_fhir(json.dumps(bundle).encode()))
    assert r.source.message_id == "assembled-at-test-time"
    assert r.source.message_time == datetime(2019, 2, 5, 8, 0, tzinfo=timezone.utc)
    # The US Core example writes literal backslash-n; they become line breaks.
    assert "\\n" not in r.findings
    assert r.findings.splitlines()[:3] == ["LINES AND TUBES: None.", "LUNGS AND PLEURA:", "Clear lungs. Normal pulmonary vascularity."]
    assert r.impression == "No acute abnormality"  # from the 19005-8 Observation (no trailing period)
    assert r.comparison == "None."  # what the Observations lack still comes from the presentedForm
    assert not any("not in this message" in u for u in r.unmapped)
    assert not any("Bundle.entry" in u for u in r.unmapped)  # both entries were used



def chest_xray_document(bundle_id: str = "doc-1") -> dict:
    """The US Core chest X-ray with its companion Observations, as a document Bundle."""
    dr = json.loads(ref_bytes("uscore_DiagnosticReport-chest-xray-report.json"))
    findings = json.loads(ref_bytes("uscore_companion_Observation-xray-chest-findings.json"))
    impression = json.loads(ref_bytes("uscore_companion_Observation-xray-chest-impression.json"))
    base = "https://fhir.example.org/r4"
    return {
        "resourceType": "Bundle", "id": bundle_id, "type": "document", "timestamp": "2019-02-05T08:00:00Z",
        "entry": [
            {"fullUrl": f"{base}/DiagnosticReport/{dr['id']}", "resource": dr},
            {"fullUrl": f"{base}/Observation/{findings['id']}", "resource": findings},
            {"fullUrl": f"{base}/Observation/{impression['id']}", "resource": impression},
        ],
    }  # fmt: skip


def message_bundle(*inner: dict, own: list[dict] = ()) -> dict:
    header = {"resourceType": "MessageHeader", "id": "mh", "eventCoding": {"code": "radiology-result"},
              "source": {"endpoint": "urn:ris"}}  # fmt: skip
    return {
        "resourceType": "Bundle", "id": "msg-1", "type": "message", "timestamp": "2019-02-06T09:00:00Z",
        "entry": [{"fullUrl": "urn:uuid:mh", "resource": header}, *({"resource": r} for r in [*own, *inner])],
    }  # fmt: skip


def test_a_report_inside_a_bundle_inside_a_bundle_is_read_with_its_own_companions():
    r = only_report(read_fhir(json.dumps(message_bundle(chest_xray_document())).encode()))
    assert r.source.message_id == "msg-1"  # the message, not the document, is what arrived
    assert r.source.message_time == datetime(2019, 2, 6, 9, 0, tzinfo=timezone.utc)
    assert r.impression == "No acute abnormality"  # from the companion Observation of the inner Bundle
    assert not any("not in this message" in u for u in r.unmapped)


def test_reports_at_several_nesting_levels_keep_distinct_indexes():
    outer_dr = json.loads(ref_bytes("uscore_DiagnosticReport-chest-xray-report.json"))
    doc = chest_xray_document()
    items = read_fhir(json.dumps(message_bundle(doc, own=[outer_dr])).encode())
    assert [type(x) for x in items] == [Report, Report]
    assert [x.source.index for x in items] == [0, 1]
    outer, inner = items
    assert "DiagnosticReport.result[0] Observation/xray-chest-findings: not in this message" in outer.unmapped
    assert not any("not in this message" in u for u in inner.unmapped)
    # What the outer report did not use is named with its path, the inner Bundle included.
    assert "Bundle.entry[2] Bundle: not used by this report" in outer.unmapped


def test_nested_bundle_errors_name_the_nested_path():
    doc = chest_xray_document()
    doc["type"] = "not-a-type"
    with pytest.raises(MalformedMessage) as info:
        read_fhir(json.dumps(message_bundle(doc)).encode())
    assert info.value.where == "Bundle.entry[1].resource.type"
    deep = message_bundle(message_bundle(message_bundle(chest_xray_document())))
    with pytest.raises(MalformedMessage) as info:
        read_fhir(json.dumps(deep).encode())
    assert "nested deeper" in str(info.value)


def test_a_message_bundle_whose_inner_bundle_has_no_report_is_skipped_as_not_a_result():
    doc = chest_xray_document()
    doc["entry"] = doc["entry"][1:]
    (item,) = read_fhir(json.dumps(message_bundle(doc)).encode())
    assert isinstance(item, Skipped) and item.reason is SkipReason.NOT_A_RESULT

def test_cardiology_report_is_not_radiology_and_says_why_by_codes_only():
    (skip,) = read_fhir(ref_bytes("uscore_DiagnosticReport-cardiology-report.json"))
    assert skip.reason is SkipReason.NOT_RADIOLOGY
    assert "LP29708-2" in skip.detail and "45033-8" in skip.detail


def test_conclusion_only_reports_are_no_findings_and_do_not_leak_the_narrative():
    for name in ("gcp_R4_DiagnosticReport-f201-ct-head-neck.json", "r4spec-ibm_diagnosticreport-example-ultrasound.json"):
        (skip,) = read_fhir(ref_bytes(name))
        assert skip.reason is SkipReason.NO_FINDINGS
        assert "conclusion only" in skip.detail
        assert "Roel" not in skip.detail and "Jim" not in skip.detail


def test_bundle_message_id_and_time_from_identifier_and_timestamp():
    items = read_fhir(ref_bytes("gcp_Bundle-transaction_oru_r01_ex6-output.json"))
    assert items[0].source.message_id == "7"  # the Bundle has no id, only an identifier
    assert items[0].source.message_time == datetime(2020, 5, 8, 13, 6, 44, 855800, tzinfo=timezone.utc)
    items = read_fhir(ref_bytes("msconv_Bundle-batch_ORU-R01-01-expected.json"))
    assert [i.source.index for i in items] == [0, 1, 2]
    assert {i.source.message_id for i in items} == {"3294d4fe-4d33-61e3-310f-3078b6bb0264"}
    assert "v2-0074 BLB" in items[1].detail


def test_invalid_unrelated_entry_does_not_cost_a_good_report():
    """The gcp Bundle holds an Observation with two value[x]: a radiology report beside it is still read."""
    bundle = json.loads(ref_bytes("gcp_Bundle-transaction_oru_r01_ex6-output.json"))
    invalid_at = next(
        i for i, e in enumerate(bundle["entry"])
        if e["resource"]["resourceType"] == "Observation" and "valueString" in e["resource"] and "valueQuantity" in e["resource"]
    )
    bundle["entry"].append({"resource": json.loads(own_bytes("dr_plain_headings_preliminary.json"))})
    items = read_fhir(json.dumps(bundle).encode())
    assert [type(i) for i in items] == [Skipped, Report]
    r = items[1]
    assert r.source.index == 1
    assert r.findings.startswith("Patchy airspace opacity")
    named = [u for u in r.unmapped if u.startswith("Bundle.entry[") and "Observation" in u]
    assert len(named) == 1 and str(invalid_at) in named[0].split("]")[0].split("[")[1].split(",")


# -- our own fixtures ---------------------------------------------------------------------------------------


def test_plain_text_presented_form_with_headings():
    data = own_bytes("dr_plain_headings_preliminary.json")
    r = only_report(read_fhir(data, location="tests/fixtures/fhir/dr_plain_headings_preliminary.json"))
    assert r.status == "preliminary" and not r.is_signed
    assert r.source.location == "tests/fixtures/fhir/dr_plain_headings_preliminary.json"
    assert r.source.key == f"{sha256_of(data)[:32]}-0"
    assert r.indication == "Productive cough for ten days, low grade fever."
    assert r.technique == "Frontal and lateral radiographs of the chest."
    assert r.comparison == "Radiograph from 14 months earlier."
    assert r.findings.splitlines() == [
        "Patchy airspace opacity in the right lower lobe, partly obscuring the right hemidiaphragm.",
        "No pleural effusion. No pneumothorax.",
        "Heart size is within normal limits. Mediastinal contours unchanged.",
    ]
    assert r.impression.startswith("Right lower lobe opacity, likely pneumonia.")
    assert r.accession.value == "RB-ACC-1001"
    assert [i.value for i in r.identifiers] == ["RB-ACC-1001", "RPT-1001"]
    assert r.patient.value == "MRN-0001001" and r.patient_reference == "Patient/rb-pat-1"
    assert r.modality == "RAD"
    assert r.unmapped == ()


def test_html_presented_form_and_signed_conclusion():
    r = only_report(read_fhir(own_bytes("dr_html_final_conclusion.json")))
    assert r.status == "final"
    assert r.impression == "Acute appendicitis without perforation or abscess."  # conclusion beats the HTML section
    assert r.indication == "Right lower quadrant pain & raised CRP."
    assert r.findings.splitlines() == [
        "The appendix measures 11 mm with periappendiceal fat stranding.",
        "No free air. No abscess.",
        "Liver, spleen <normal size> and homogeneous.",
    ]
    assert (r.procedure.system, r.procedure.code) == (LOINC, "36813-4")  # LOINC preferred over CPT
    assert r.effective == datetime(2025, 4, 1, 22, 10, tzinfo=timezone.utc)  # effectivePeriod.start
    assert "Example Reader" not in r.findings + r.impression
    assert "DiagnosticReport.presentedForm[1] application/pdf: by url only, cannot be read" in r.unmapped
    assert "DiagnosticReport.conclusionCode[0] SNOMED 85189001" in r.unmapped
    assert any("sign-off" in u for u in r.unmapped)


def test_contained_observations():
    r = only_report(read_fhir(own_bytes("dr_contained_observations.json")))
    assert r.findings.startswith("Mild degenerative narrowing of the medial compartment")
    assert r.comparison == "No prior knee imaging available."  # from note[], section by code.text
    assert r.impression is None
    assert r.effective == datetime(2025, 2, 11)
    assert "DiagnosticReport.result[2] #dose LOINC 73569-6: not a report section" in r.unmapped
    assert "DiagnosticReport.contained[3] Observation/orphan: not referenced" in r.unmapped


def test_collection_bundle_with_urn_uuid_references_order_and_patient():
    r = only_report(read_fhir(own_bytes("bundle_collection_urn.json")))
    assert r.source.message_id == "rb-bundle-10"
    assert r.findings.startswith("The 6 mm nodule in the right upper lobe is stable")
    assert r.impression == "Stable right upper lobe nodule; no further follow-up needed."
    assert r.indication == "Follow-up of a 6 mm pulmonary nodule"  # ServiceRequest.reasonCode
    assert r.based_on == ("urn:uuid:7d1c0f5e-0000-4000-8000-000000000002",)
    # The Patient is resolved to its MR identifier, not the first one listed.
    assert (r.patient.value, r.patient.type_code) == ("MRN-0001010", "MR")
    assert r.patient_reference == "urn:uuid:7d1c0f5e-0000-4000-8000-000000000001"
    # Nothing typed ACSN: the order's requisition is the accession; the placer number is kept as PLAC.
    assert r.accession.value == "REQ-55510"
    assert ("ORD-55510", "PLAC") in [(i.value, i.type_code) for i in r.identifiers]
    assert r.unmapped == ("Bundle.entry[5] Observation: not used by this report",)


def test_message_bundle_with_a_radiology_and_a_lab_report():
    report, skip = read_fhir(own_bytes("bundle_message_two_reports.json"))
    assert isinstance(report, Report) and report.source.index == 0
    assert report.findings.startswith("No intracranial haemorrhage.")
    assert report.impression == "No acute intracranial abnormality."
    assert report.accession.value == "RB-ACC-1011"
    assert report.patient.value == "MRN-0001011"
    assert "Bundle.entry[0] MessageHeader: not used by this report" in report.unmapped
    assert isinstance(skip, Skipped) and skip.source.index == 1 and skip.reason is SkipReason.NOT_RADIOLOGY


def test_transaction_bundle_invalid_result_is_named_and_presented_form_used():
    r = only_report(read_fhir(own_bytes("bundle_transaction_invalid_result.json")))
    assert r.source.message_id == "MSG-1012"  # Bundle.identifier when there is no Bundle.id
    assert r.findings.startswith("Gallbladder contains several mobile echogenic stones")  # no heading: all findings
    assert r.impression == "Cholelithiasis without cholecystitis."
    assert "Gallbladder stones." not in r.findings  # the invalid Observation is not read
    assert "Bundle.entry[1] Observation: invalid FHIR (value_error), not used" in r.unmapped
    assert r.patient.value == "MRN-0001012" and r.patient_reference is None
    assert r.accession.value == "RB-ACC-1012"  # from basedOn.identifier (logical reference)
    assert r.modality == "US"


def test_narrative_only_report():
    r = only_report(read_fhir(own_bytes("dr_narrative_only.json")))
    assert r.status == "partial"
    assert r.findings.startswith("Disc desiccation at L4-L5")
    assert r.impression == "L4-L5 degenerative disc disease with lateral recess narrowing."
    assert r.procedure.display == "MRI lumbar spine without contrast" and r.procedure.code is None


def test_pdf_and_rtf_presented_forms_are_read():
    dr = json.loads(ref_bytes("uscore_DiagnosticReport-chest-xray-report.json"))
    lines = ["FINDINGS: Small left pleural effusion. No pneumothorax.", "IMPRESSION: Small left pleural effusion."]
    dr["presentedForm"] = [{"contentType": "application/pdf", "data": base64.b64encode(text_pdf(lines)).decode()}]
    r = only_report(read_fhir(json.dumps(dr).encode()))
    assert r.findings == "Small left pleural effusion. No pneumothorax."
    assert r.impression == "Small left pleural effusion."
    rtf = r"{\rtf1\ansi FINDINGS:\par Clear lungs.\par IMPRESSION:\par Normal chest.\par}"
    # an RTF and a PDF rendition of one report: the RTF is read, the PDF is named
    dr["presentedForm"].insert(0, {"contentType": "application/rtf", "data": b64(rtf)})
    r = only_report(read_fhir(json.dumps(dr).encode()))
    assert (r.findings, r.impression) == ("Clear lungs.", "Normal chest.")
    assert "DiagnosticReport.presentedForm[1] application/pdf: another rendition, not read" in r.unmapped


def test_lab_report_patient_pdf_only():
    (lab,) = read_fhir(own_bytes("dr_lab_hemoglobin.json"))
    assert lab.reason is SkipReason.NOT_RADIOLOGY and "HM" in lab.detail
    (patient,) = read_fhir(own_bytes("patient.json"))
    assert patient.reason is SkipReason.NOT_A_RESULT and patient.source.message_id == "rb-pat-6"
    assert "MRN" not in patient.detail
    (pdf,) = read_fhir(own_bytes("dr_pdf_only.json"))
    assert pdf.reason is SkipReason.NO_FINDINGS
    assert "presentedForm[0] application/pdf: PDF attachment could not be read (PdfStreamError)" in pdf.detail


def test_panel_observation_members_are_followed():
    dr = _dr(
        presentedForm=[],
        contained=[
            {"resourceType": "Observation", "id": "panel", "status": "final", "code": {"text": "Imaging report panel"},
             "hasMember": [{"reference": "#imp"}, {"reference": "#fnd"}, {"reference": "#gone"}]},
            {"resourceType": "Observation", "id": "fnd", "status": "final", "code": {"text": "Findings"},
             "valueString": "Nodular thickening of the left adrenal gland."},
            {"resourceType": "Observation", "id": "imp", "status": "final", "code": {"coding": [{"system": LOINC, "code": "19005-8"}]},
             "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "0", "display": "Adrenal nodule"}]}},
        ],
        result=[{"reference": "#panel"}],
    )
    del dr["presentedForm"]
    r = only_report(read_fhir(json.dumps(dr).encode()))
    assert r.findings == "Nodular thickening of the left adrenal gland."
    assert r.impression == "Adrenal nodule"
    assert "DiagnosticReport.result[0] #panel.hasMember[2] #gone: not in this message" in r.unmapped


def test_malformed_json_and_missing_status():
    with pytest.raises(MalformedMessage) as e:
        read_fhir(own_bytes("malformed.json"))
    assert e.value.where == "line 3 column 1" and "invalid JSON" in e.value.reason
    with pytest.raises(MalformedMessage) as e:
        read_fhir(own_bytes("dr_missing_status.json"))
    assert e.value.where == "DiagnosticReport.status" and e.value.message_id == "rb-nostatus-07"
    assert "Lines and tubes" not in str(e.value)


def _dr(**extra) -> dict:
    dr = json.loads(own_bytes("dr_plain_headings_preliminary.json"))
    dr.update(extra)
    return dr


@pytest.mark.parametrize(
    "payload, where",
    [
        (b"", None),
        (b"[1, 2]", "$"),
        ("\u00e9".encode("latin-1"), "byte 0"),
        (b'{"id": "x"}', "resourceType"),
        (b'{"resourceType": "NoSuchThing"}', "resourceType"),
        (json.dumps(_dr(status="done")).encode(), "DiagnosticReport.status"),
        (json.dumps({"resourceType": "Bundle", "id": "b", "entry": []}).encode(), "Bundle.type"),
        (json.dumps({"resourceType": "Bundle", "id": "b", "type": ["batch"], "entry": []}).encode(), "Bundle.type"),
        (json.dumps({"resourceType": "Bundle", "type": "batch", "entry": [{"resource": {"id": "x"}}]}).encode(), "Bundle.entry[0].resource"),
        (
            json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [
                {"resource": {"resourceType": "Patient"}}, {"resource": _dr(status=None)}]}).encode(),
            "Bundle.entry[1].resource.status",
        ),
        (json.dumps(_dr(effectiveDateTime="yesterday")).encode(), "DiagnosticReport.effectiveDateTime"),
    ],
)
def test_malformed_inputs_name_where(payload, where):
    with pytest.raises(MalformedMessage) as e:
        read_fhir(payload)
    assert e.value.where == where
    assert not e.value.retryable
    assert "Patchy" not in str(e.value) and "MRN" not in str(e.value)


@pytest.mark.parametrize("btype", ["transaction", "batch", "collection", "message", "searchset", "document", "history"])
def test_a_report_is_read_from_every_bundle_type(btype):
    dr = json.loads(own_bytes("dr_plain_headings_preliminary.json"))
    entries = [{"fullUrl": "urn:uuid:00000000-0000-4000-8000-00000000000a", "resource": dr}]
    if btype == "document":
        entries.insert(0, {"resource": {"resourceType": "Composition", "status": "final", "type": {"text": "report"},
                                        "date": "2025-03-04", "author": [{"display": "RIS"}], "title": "Report"}})
    if btype == "searchset":
        entries.append({"resource": {"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "informational"}]},
                        "search": {"mode": "outcome"}})
    bundle = {"resourceType": "Bundle", "id": f"b-{btype}", "type": btype, "entry": entries}
    r = only_report(read_fhir(json.dumps(bundle).encode()))
    assert r.source.message_id == f"b-{btype}"
    assert r.findings.startswith("Patchy airspace opacity")
    assert r.source.message_time == datetime.fromisoformat("2025-03-04T09:02:00+01:00")  # falls back to issued


def test_bundle_without_report_and_received_at_fallback():
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": json.loads(own_bytes("patient.json"))}]}
    received = datetime(2025, 9, 1, 12, 0, tzinfo=timezone.utc)
    (skip,) = read_fhir(json.dumps(bundle).encode(), received_at=received)
    assert skip.reason is SkipReason.NOT_A_RESULT and "1 Patient" in skip.detail
    assert skip.source.message_time == received
    dr = _dr()
    del dr["issued"]
    r = only_report(read_fhir(json.dumps(dr).encode(), received_at=received))
    assert r.source.message_time == received


def test_charset_and_two_renditions():
    text = "FINDINGS: Opacit\u00e9 basale droite.\nIMPRESSION: Pneumopathie probable."
    dr = _dr(presentedForm=[
        {"contentType": "text/html", "data": b64("<p>FINDINGS: other rendition</p>")},
        {"contentType": "text/plain; charset=ISO-8859-1", "data": b64(text, "latin-1")},
    ])
    r = only_report(read_fhir(json.dumps(dr).encode()))
    assert r.findings == "Opacit\u00e9 basale droite."  # plain text preferred and decoded with its charset
    assert "DiagnosticReport.presentedForm[0] text/html: another rendition, not read" in r.unmapped


def test_only_a_trailing_sign_off_block_is_removed():
    text = ("FINDINGS: Small left apical pneumothorax.\nIMPRESSION: Left pneumothorax.\n"
            "Attending physician notified at 10:05.\nRead by Dr Placeholder\nSigned Date/Time: 01/02/25 10:10")
    r = only_report(read_fhir(json.dumps(_dr(presentedForm=[{"contentType": "text/plain", "data": b64(text)}])).encode()))
    assert r.impression == "Left pneumothorax.\nAttending physician notified at 10:05."
    assert "DiagnosticReport.presentedForm[0] text/plain: 2 sign-off line(s) removed" in r.unmapped


def test_not_radiology_unless_category_code_or_imaging_study_says_so():
    plain = [{"contentType": "text/plain", "data": b64("FINDINGS: Something seen.")}]
    base = {"resourceType": "DiagnosticReport", "status": "final", "presentedForm": plain}
    cases = [
        ({"code": {"text": "Lipid panel"}}, False),
        ({"code": {"text": "Glucose MG/DL"}}, False),
        ({"code": {"text": "XR Wrist 2 views"}}, True),
        ({"code": {"text": "Bone densitometry"}}, True),
        ({"code": {"coding": [{"system": LOINC, "code": "18748-4"}]}}, True),
        ({"code": {"text": "Study"}, "imagingStudy": [{"reference": "ImagingStudy/1"}]}, True),
        ({"code": {"text": "Study"}, "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "394914008"}]}]}, True),
    ]
    for extra, radiology in cases:
        (item,) = read_fhir(json.dumps({**base, **extra}).encode())
        assert isinstance(item, Report) is radiology, extra


def test_html_to_text_keeps_line_breaks_and_decodes_entities():
    markup = "<div><h3>Title</h3><p>One &amp; two<br/>three&nbsp;four</p><table><tr><td>a</td><td>b</td></tr></table></div>"
    assert html_to_text(markup) == "Title\nOne & two\nthree four\na b"


def test_no_report_text_or_patient_identifier_in_unmapped_or_skip_details():
    for path in sorted(OWN.glob("*.json")) + sorted(REF.glob("*.json")):
        try:
            items = read_fhir(path.read_bytes())
        except MalformedMessage:
            continue
        for item in items:
            names = item.unmapped if isinstance(item, Report) else (item.detail,)
            for name in names:
                assert "MRN-" not in name and "Patchy" not in name and "Clear lungs" not in name, (path.name, name)
            if isinstance(item, Report):
                for value in (item.findings, item.impression):
                    if value and len(value) > 20:
                        assert not any(value[:20] in n for n in names)


# -- OpenI reports wrapped into FHIR at test time -------------------------------------------------------------


def openi_rows(n: int) -> list[dict]:
    return [r for r in samples.openi_reports() if r["findings"] and r["impression"] and r["indication"]][:n]


def wrap_openi(row: dict, style: str) -> bytes:
    dr = {
        "resourceType": "DiagnosticReport",
        "id": f"openi-{row['uid']}",
        "status": "preliminary",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}],
        "code": {"coding": [{"system": LOINC, "code": "36643-5", "display": "XR Chest 2 Views"}], "text": row["image"]},
        "subject": {"identifier": {"system": "urn:openi", "value": f"P{row['uid']}"}},
    }
    if style == "text":
        body = f"INDICATION: {row['indication']}\nFINDINGS: {row['findings']}\nIMPRESSION: {row['impression']}\n"
        dr["presentedForm"] = [{"contentType": "text/plain", "data": b64(body)}]
    elif style == "html":
        body = f"<p>FINDINGS:</p><p>{html.escape(row['findings'])}</p><p>IMPRESSION:</p><p>{html.escape(row['impression'])}</p>"
        dr["presentedForm"] = [{"contentType": "text/html", "data": b64(body)}]
    else:  # contained Observations, impression as the signed conclusion
        dr["contained"] = [{"resourceType": "Observation", "id": "f", "status": "final",
                            "code": {"coding": [{"system": LOINC, "code": "59776-5"}]}, "valueString": row["findings"]}]
        dr["result"] = [{"reference": "#f"}]
        dr["conclusion"] = row["impression"]
        dr["status"] = "final"
    return json.dumps(dr).encode()


@pytest.mark.parametrize("style", ["text", "html", "observation"])
def test_openi_reports_round_trip_through_fhir(style):
    rows = openi_rows(5)
    assert len(rows) == 5
    for row in rows:
        r = only_report(read_fhir(wrap_openi(row, style)))
        assert squash(r.findings) == squash(row["findings"]), row["uid"]
        assert squash(r.impression) == squash(row["impression"]), row["uid"]
        assert r.patient.value == f"P{row['uid']}"
        if style == "text":
            assert squash(r.indication) == squash(row["indication"])


def test_openi_samples_module_round_trips():
    from radbridge.samples import to_fhir

    row = openi_rows(1)[0]
    r = only_report(read_fhir(to_fhir(row, with_impression=True)))
    assert squash(r.findings) == squash(row["findings"])
    assert r.impression == row["impression"]
    assert r.accession.value == f"ACC{row['uid']}"


def test_reading_does_not_mutate_anything_between_calls():
    data = own_bytes("bundle_collection_urn.json")
    assert read_fhir(data) == read_fhir(copy.copy(data))
