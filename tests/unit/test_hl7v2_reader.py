"""HL7 v2 ORU reader: every reference fixture, every own fixture, the encoding details, and OpenI round trips."""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pdf_helpers import text_pdf

from radbridge.formats.hl7v2.er7 import (
    Delimiters,
    escape,
    hl7apy_parse,
    parse_dtm,
    read_delimiters,
    resolve_version,
    split_segments,
    unescape,
)
from radbridge.formats.hl7v2.reader import parse, read_hl7v2, split_hl7_stream
from radbridge.domain import Report, SkipReason, Skipped
from radbridge.errors import MalformedMessage, PermanentError

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
REF = SHARED / "fixtures-ref" / "hl7v2"
OWN = REPO / "tests" / "fixtures" / "hl7v2"
OPENI = SHARED / "data" / "openi" / "reports.jsonl"


def read_file(path: Path) -> list[Report | Skipped]:
    items: list[Report | Skipped] = []
    for i, message in enumerate(split_hl7_stream(path.read_bytes())):
        items.extend(read_hl7v2(message, location=f"{path.name}#{i}"))
    return items


def only_report(path: Path) -> Report:
    items = read_file(path)
    assert len(items) == 1 and isinstance(items[0], Report), items
    return items[0]


# ---------------------------------------------------------------------------------------------------------
# Reference fixtures (real public messages): each one's outcome is decided here

# file -> (number of OBR groups, expected outcome). Lab results are not radiology; the LinuxForHealth
# "imaging" messages are echocardiograms, which radbridge treats as cardiology (see hl7v2_codes).
REF_EXPECTED = {
    "dcm4che_ORU_R01_MESA_rad_v251.hl7": (1, "report"),
    "lfh_ORU_imaging_echo_multiline_v26.hl7": (1, "cardiology"),
    "lfh_ORU_imaging_echo_multiline_mixed_ST_TX_v26.hl7": (1, "cardiology"),
    "msconv_ORU_R01_RMGEAD_lab_glucose_v24.hl7": (1, "lab"),
    "msconv_ORU_R01_01_kitchen_sink_v251.hl7": (1, "lab"),
    "gcp_oru_r01_ex1_vitals_v23.hl7": (1, "lab"),
    "gcp_oru_r01_ex6_simhosp_lab_v23.hl7": (1, "lab"),
    "mirth_ORU_cbc_v23.hl7": (1, "lab"),
    "mirth_ORU_cmp_cr_v24.hl7": (1, "lab"),
    "cdcti_Epic_ORU_mayo_negative_nte_v23.hl7": (1, "lab"),
    "cdcti_CA_ORU_newborn_screen_escapes_v251.hl7": (20, "lab"),
    "nodehl7_athena_ORU_lab_v251.hl7": (1, "lab"),
}


def test_every_reference_file_has_a_decided_outcome():
    assert sorted(p.name for p in REF.glob("*.hl7")) == sorted(REF_EXPECTED)


@pytest.mark.parametrize("name", sorted(REF_EXPECTED))
def test_reference_file(name):
    path = REF / name
    groups, outcome = REF_EXPECTED[name]
    messages = split_hl7_stream(path.read_bytes())
    assert len(messages) == 1
    items = read_file(path)
    assert [i.source.index for i in items] == list(range(groups))
    for item in items:
        assert item.source.format == "hl7v2" and len(item.source.sha256) == 64
        assert item.source.location == f"{name}#0"
    if outcome == "report":
        assert all(isinstance(i, Report) and i.findings for i in items)
    else:
        assert all(isinstance(i, Skipped) and i.reason is SkipReason.NOT_RADIOLOGY for i in items)
        if outcome == "cardiology":
            assert "cardiology" in items[0].detail


def test_dcm4che_radiology_report_fields():
    report = only_report(REF / "dcm4che_ORU_R01_MESA_rad_v251.hl7")
    assert report.source.message_id == "MESA4b141a5c"
    assert report.source.message_time is None  # no MSH-7
    assert report.status == "final"  # OBR-25 is empty (shifted into OBR-24): the OBX statuses decide
    assert report.modality is None and "OBR-24 (not a radiology service section code)" in report.unmapped
    assert report.patient.value == "P33" and report.patient.system == "MINIRIS"
    assert report.accession.value == "ACC1"
    kinds = {i.type_code: i.value for i in report.identifiers}
    assert kinds == {"ACSN": "ACC1", "PLAC": "A601Z", "FILL": "B601Z"}
    # TX findings (a mistyped LOINC, recognised by its name), OBX-4 sub-IDs kept in OBX order
    lines = report.findings.split("\n")
    assert lines[0].startswith("The right kidney is slightly enlarged")
    assert lines[1].startswith("There is a small mass in the left lung")
    assert "Liver Mass: 4mmx6mm" in lines and "Liver Mass: 5mmx7mm" in lines
    assert any("bronchopneumonia" in ln for ln in lines)
    # Everything else is named, with codes only
    assert "OBX[1] ST 113014^DCM (reference)" in report.unmapped
    assert "OBX[6] CE 309088003^SCT (coded value)" in report.unmapped
    assert "OBX[9] TX 18783-1^LN (recommendation)" in report.unmapped
    assert "OBX[11] TX 11487-6^LN (reference)" in report.unmapped
    joined = " ".join(report.unmapped)
    for text in ("Follow-up", "Patricia", "1-732", "Malignant", "kidney"):
        assert text not in joined


@pytest.mark.parametrize(
    "name", ["lfh_ORU_imaging_echo_multiline_v26.hl7", "lfh_ORU_imaging_echo_multiline_mixed_ST_TX_v26.hl7"]
)
def test_lfh_multiline_text_is_joined_in_obx_order(name):
    # The same bytes with a radiology procedure instead of the echocardiogram: the report text is the
    # TX lines (empty OBX-3, first value empty, an empty ST before them) joined in OBX order.
    data = (REF / name).read_bytes().replace(b"1487^ECHO CARDIOGRAM COMPLETE", b"1487^CT HEAD")
    (report,) = read_hl7v2(data)
    assert report.findings == "[PII] Emergency Department\nED Encounter Arrival Date: [ADDRESS] [PERSONALNAME]:"
    assert report.modality == "CT"
    assert report.unmapped == ("NTE[1]", "PV1[1]")
    assert report.source.message_time == datetime(2020, 8, 2, 12, 44, 55)


def test_skip_details_never_quote_patient_data_or_text():
    for path in REF.glob("*.hl7"):
        data = path.read_bytes()
        for item in read_file(path):
            if isinstance(item, Skipped):
                for secret in ("Mendes", "Patient^", "EVERYWOMAN", "MOUSE", "Hanso", "Trivedi", "Negative", "Smith"):
                    assert secret not in item.detail, (path.name, item.detail)
                assert item.detail.encode() not in data


def test_kitchen_sink_prt_in_251_is_read_and_cross_checked_with_hl7apy():
    text = (REF / "msconv_ORU_R01_01_kitchen_sink_v251.hl7").read_text()
    msg = parse(text.encode())
    assert msg.version == "2.5.1"
    apy, notes = hl7apy_parse(text)
    assert [s.name for s in apy.children] == [s.name for s in msg.segments]
    assert any("PRT" in n for n in notes)


# ---------------------------------------------------------------------------------------------------------
# Cross-check: the fast tokeniser agrees with hl7apy's full parse on every well-formed fixture


def _wellformed_messages():
    for folder in (REF, OWN):
        for path in sorted(folder.glob("*.hl7")):
            if path.name.startswith("malformed"):
                continue
            for i, message in enumerate(split_hl7_stream(path.read_bytes())):
                yield f"{path.name}#{i}", message


@pytest.mark.parametrize("where,message", list(_wellformed_messages()), ids=lambda v: v if isinstance(v, str) else "")
def test_tokeniser_agrees_with_hl7apy(where, message):
    msg = parse(message)
    apy, _ = hl7apy_parse(message.decode("utf-8").lstrip("\ufeff").strip("\x0b\x1c\r\n"))
    ours = [s for s in msg.segments]
    theirs = list(apy.children)
    assert [s.name for s in theirs] == [s.name for s in ours]
    d = msg.delims
    for mine, seg in zip(ours, theirs):
        if mine.name != "OBX":
            continue
        for n in (2, 3, 4, 5, 11):
            # hl7apy keeps values escaped but re-escapes the escape character of formatting sequences
            reps = [_unre_escape(f.value, d.escape) for f in seg.children if f.name == f"OBX_{n}"]
            theirs = d.repetition.join(reps)
            assert theirs.rstrip(d.component) == mine[n].rstrip(d.component), (where, mine.position, n)


def _unre_escape(value: str, esc: str) -> str:
    """Undo hl7apy's escaping of the escape character around formatting and hex sequences."""
    e = re.escape(esc)
    return re.sub(rf"{e}E{e}(\.[a-z]{{2}}[^{e}]*|X[0-9A-Fa-f]+){e}E{e}", lambda m: f"{esc}{m.group(1)}{esc}", value)


# ---------------------------------------------------------------------------------------------------------
# Own fixtures (tests/fixtures/hl7v2, own text): every input variant


def test_crlf_headings_in_uncoded_tx_lines():
    r = only_report(OWN / "ct_abdomen_headings_crlf_v251.hl7")
    assert r.findings == (
        "The appendix is dilated to 11 mm with periappendiceal fat stranding.\n"
        "No free air. No drainable fluid collection.\n"
        "Liver, spleen and kidneys are unremarkable."
    )
    assert r.impression == "Acute uncomplicated appendicitis."
    assert r.indication == "Right lower quadrant pain for two days."
    assert r.comparison == "None."
    assert "Axial images after 90 mL of iodinated contrast." in r.technique
    assert r.status == "final" and r.modality == "CT"
    assert r.procedure.code == "74177" and r.procedure.system == "http://www.ama-assn.org/go/cpt"
    assert r.patient.value == "MRN10001" and r.patient.system == "urn:oid:1.2.3.4.5" and r.patient.type_code == "MR"
    assert r.accession.value == "ACC-501"
    assert r.source.message_time == datetime(2024, 3, 12, 10, 15, 30, tzinfo=timezone(timedelta(hours=1)))
    assert r.effective == datetime(2024, 3, 12, 9, 45, tzinfo=timezone(timedelta(hours=1)))
    assert r.unmapped == ("PV1[1]", "ORC[1]")


def test_lf_gdt_suffix_preliminary():
    r = only_report(OWN / "cxr_gdt_suffix_lf_v23.hl7")
    assert r.status == "preliminary"
    assert r.findings == "Heart size is normal. Lungs are clear without focal consolidation.\nNo pleural effusion or pneumothorax."
    assert r.impression == "No acute cardiopulmonary process."
    kinds = {i.type_code: i.value for i in r.identifiers}
    assert kinds == {"ACSN": "RAD77", "PLAC": "ORD77", "FILL": "RAD77"}  # no OBR-18: the filler number


def test_mllp_bom_fnd_imp_suffixes():
    data = (OWN / "mri_knee_fnd_imp_mllp_bom_v24.hl7").read_bytes()
    assert data.startswith(b"\x0b\xef\xbb\xbf")
    (message,) = split_hl7_stream(data)
    assert message.startswith(b"MSH|") and message.endswith(b"F")
    r = only_report(OWN / "mri_knee_fnd_imp_mllp_bom_v24.hl7")
    assert r.findings.splitlines() == [
        "Complex tear of the posterior horn of the medial meniscus.",
        "Intact cruciate and collateral ligaments. Small joint effusion.",
    ]
    assert r.impression == "Medial meniscal tear."
    # read_hl7v2 also accepts the framed bytes directly
    (again,) = read_hl7v2(data)
    assert again.findings == r.findings


def test_batch_file_with_three_messages():
    items = read_file(OWN / "batch_fhs_bhs_three_messages_v25.hl7")
    assert [type(i).__name__ for i in items] == ["Report", "Report", "Skipped"]
    assert [i.source.message_id for i in items] == ["RB-B-1", "RB-B-2", "RB-B-3"]
    assert len({i.source.sha256 for i in items}) == 3
    wrist, gallbladder, adt = items
    assert wrist.findings == "Nondisplaced fracture of the distal radius."  # inline capital headings
    assert wrist.impression == "Distal radius fracture."
    assert gallbladder.impression == "Cholelithiasis without cholecystitis."
    assert adt.reason is SkipReason.NOT_A_RESULT and "ADT^A01" in adt.detail


def test_v28_loinc_sections_ft_escapes_subids_and_repetitions():
    r = only_report(OWN / "us_thyroid_loinc_sections_v28.hl7")
    assert r.indication == "Known left thyroid nodule."  # the report's own section wins over OBR-13/OBR-31
    assert r.comparison == "Ultrasound from 2021."
    assert r.technique == "Grayscale and color Doppler imaging."
    assert r.findings.splitlines() == [
        "Right lobe 4.1 cm, homogeneous.",
        "Left lobe 4.5 cm with a 14 mm solid nodule",
        "(previously 12 mm).",
        "No abnormal cervical lymph nodes.",  # second OBX-5 repetition
        "Isthmus 3 mm & symmetric.",
    ]
    assert r.impression == "Slowly enlarging left thyroid nodule, TI-RADS 4.\nConsider fine needle aspiration."
    assert r.status == "corrected"
    assert r.source.message_time == datetime(2023, 6, 15, 10, 11, 12, 123000, tzinfo=timezone(timedelta(hours=-5)))
    assert "OBX[8] NM 33756-8^LN (value)" in r.unmapped
    assert "PRT[1]" in r.unmapped  # PRT is an ordinary segment in 2.8


def test_custom_delimiters_and_every_escape():
    r = only_report(OWN / "escapes_custom_delimiters_v251.hl7")
    assert r.findings.splitlines() == [
        "No acute hemorrhage# mass effect or midline shift.",
        "Ventricles normal in size % configuration; a$b * c @ d.",
        "Gray-white differentiation preserved.",
    ]
    assert r.impression == "No acute intracranial abnormality."
    assert r.procedure.display == "CT HEAD WITHOUT CONTRAST"


def test_several_obr_groups_each_its_own_report():
    items = read_file(OWN / "multi_obr_two_rad_one_lab_v251.hl7")
    chest, abdomen, lab = items
    assert [i.source.index for i in items] == [0, 1, 2]
    assert chest.findings == "Bilateral segmental pulmonary emboli. No right heart strain."
    assert chest.impression == "Acute pulmonary embolism."
    assert chest.accession.value == "ACC-71" and chest.status == "final"
    assert "NTE[1]" in chest.unmapped and "NTE[1]" not in abdomen.unmapped
    assert abdomen.status == "preliminary" and abdomen.impression is None
    assert abdomen.findings == "Simple cyst in the upper pole of the left kidney.\nAdrenal glands are normal."
    assert isinstance(lab, Skipped) and lab.reason is SkipReason.NOT_RADIOLOGY and lab.source.index == 2
    assert chest.source.key != abdomen.source.key


def test_mixed_st_tx_ft_in_obx_order_and_deleted_line_named():
    r = only_report(OWN / "mixed_st_tx_ft_subids_v26.hl7")
    assert r.findings.splitlines() == [
        "Breast composition: scattered fibroglandular density.",
        "No suspicious mass, calcification or architectural distortion.",
        "Skin and nipples are normal.",
        "Axillae unremarkable.",
    ]
    assert r.impression == "BI-RADS 1, negative."
    assert "retracted" not in (r.findings + r.impression)
    assert r.unmapped == ("OBX[4] TX (result status D: not used)",)


def test_segment_unknown_to_declared_version_does_not_lose_the_message():
    r = only_report(OWN / "prt_and_z_segment_in_v251.hl7")
    assert r.impression == "Mild degenerative change at L4-L5."
    assert r.unmapped == ("PRT[1] (HL7 2.7 segment, not in 2.5.1; kept unparsed)", "ZDS[1] (Z-segment)")


def test_oldest_and_unsupported_versions():
    old = only_report(OWN / "xr_hand_v22.hl7")
    assert old.findings == "No fracture or dislocation. Joint spaces are preserved."
    assert old.patient.value == "OLD1010" and old.modality == "RAD"
    new = only_report(OWN / "ct_sinus_v29_unknown_version.hl7")
    assert new.unmapped == ("MSH-12 version 2.9 read with HL7 2.8.2 tables",)
    assert parse((OWN / "ct_sinus_v29_unknown_version.hl7").read_bytes()).version == "2.8.2"


def test_radiology_without_findings_is_skipped():
    (item,) = read_file(OWN / "no_findings_impression_only_v251.hl7")
    assert isinstance(item, Skipped) and item.reason is SkipReason.NO_FINDINGS
    assert "Line tip" not in item.detail


def test_report_carried_in_nte_segments():
    r = only_report(OWN / "report_in_nte_v23.hl7")
    assert r.findings == "Normal liver echotexture. Common bile duct 4 mm."
    assert r.impression == "Normal abdominal ultrasound."


def test_adt_is_not_a_result():
    (item,) = read_file(OWN / "adt_a01_not_a_result_v25.hl7")
    assert item.reason is SkipReason.NOT_A_RESULT and item.source.message_id == "RB-ADT-13"


@pytest.mark.parametrize(
    "name,where,message_id",
    [
        ("malformed_no_msh.hl7", "segment 1", None),
        ("malformed_truncated_msh.hl7", "MSH-2", None),
        ("malformed_no_msh9.hl7", "MSH-9", "RB-BAD-15"),
        ("malformed_binary_segment.hl7", "segment 3", "RB-BAD-16"),
    ],
)
def test_malformed_fixtures(name, where, message_id):
    data = (OWN / name).read_bytes()
    with pytest.raises(MalformedMessage) as info:
        for message in split_hl7_stream(data):
            read_hl7v2(message)
    err = info.value
    assert isinstance(err, PermanentError) and err.where == where and err.message_id == message_id
    assert "X1" not in str(err) and "X2" not in str(err) and "garbage" not in str(err)


def test_every_own_fixture_is_exercised():
    tested = {
        "ct_abdomen_headings_crlf_v251.hl7", "cxr_gdt_suffix_lf_v23.hl7", "mri_knee_fnd_imp_mllp_bom_v24.hl7",
        "batch_fhs_bhs_three_messages_v25.hl7", "us_thyroid_loinc_sections_v28.hl7",
        "escapes_custom_delimiters_v251.hl7", "multi_obr_two_rad_one_lab_v251.hl7",
        "mixed_st_tx_ft_subids_v26.hl7", "prt_and_z_segment_in_v251.hl7", "xr_hand_v22.hl7",
        "ct_sinus_v29_unknown_version.hl7", "no_findings_impression_only_v251.hl7", "report_in_nte_v23.hl7",
        "adt_a01_not_a_result_v25.hl7", "malformed_no_msh.hl7", "malformed_truncated_msh.hl7",
        "malformed_no_msh9.hl7", "malformed_binary_segment.hl7",
    }  # fmt: skip
    assert {p.name for p in OWN.glob("*.hl7")} == tested


# ---------------------------------------------------------------------------------------------------------
# Messages built here: status, indication, classification and error paths

def oru(*body: str, obr: str | None = None, version: str = "2.5.1", sep: str = "\r") -> bytes:
    obr = obr or "OBR|1||F1^RIS|71046^XR CHEST 2 VIEWS^C4|||20240101101010|||||||||||||||||RAD|F"
    segs = ["MSH|^~\\&|RIS|H|EHR|H|20240101121212||ORU^R01|T-1|P|" + version, "PID|1||M1^^^H^MR", obr, *body]
    return sep.join(segs).encode()


def obr_with(procedure: str, section: str = "", status: str = "") -> str:
    fields = ["OBR", "1", "", "F1^RIS", procedure] + [""] * 21
    fields[24], fields[25] = section, status
    return "|".join(fields)


FINDING = "OBX|1|TX|59776-5^Procedure Findings^LN||Lungs are clear.||||||{status}"


@pytest.mark.parametrize(
    "obr25,obx11,expected",
    [("F", "F", "final"), ("P", "P", "preliminary"), ("C", "C", "corrected"), ("X", "F", "cancelled"),
     ("A", "F", "partial"), ("R", "F", "partial"), ("I", "", "registered"), ("S", "", "registered"),
     ("", "P", "preliminary"), ("", "F", "final"), ("", "", "unknown")],
)  # fmt: skip
def test_status_mapping(obr25, obx11, expected):
    obr = f"OBR|1||F1^RIS|71046^XR CHEST 2 VIEWS^C4|||20240101101010|||||||||||||||||RAD|{obr25}"
    (r,) = read_hl7v2(oru(FINDING.format(status=obx11), obr=obr))
    assert r.status == expected


def test_indication_from_obr13_and_obr31_when_the_text_has_none():
    obr = "OBR|1||F1^RIS|71046^XR CHEST^C4|||20240101||||||Fever and cough|||||||||||RAD|F||||||^Suspected pneumonia"
    (r,) = read_hl7v2(oru(FINDING.format(status="F"), obr=obr))
    assert r.indication == "Suspected pneumonia\nFever and cough"


def test_no_headings_no_codes_means_findings():
    (r,) = read_hl7v2(oru("OBX|1|TX|||Mild cardiomegaly.||||||F", "OBX|2|TX|||No effusion.||||||F"))
    assert r.findings == "Mild cardiomegaly.\nNo effusion." and r.impression is None


def test_headings_inside_a_coded_findings_obx():
    (r,) = read_hl7v2(oru("OBX|1|TX|59776-5^Findings^LN||FINDINGS: Clear lungs.\\.br\\IMPRESSION: Normal.||||||F"))
    assert r.findings == "Clear lungs." and r.impression == "Normal."


def test_preliminary_obx_lines_without_obr_status():
    (r,) = read_hl7v2(oru("OBX|1|TX|&GDT||Findings: Small effusion.||||||P", obr=obr_with("71046^XR CHEST")))
    assert r.status == "preliminary" and r.findings == "Small effusion."


@pytest.mark.parametrize(
    "obr,radiology",
    [
        ("OBR|1||F1|24627-2^CT Chest^LN", True),
        ("OBR|1||F1|MAM1^Screening mammogram^L", True),
        ("OBR|1||F1|X1^Knee X-ray^L", True),
        ("OBR|1||F1|X2^Pelvic ultrasound^L", True),
        ("OBR|1||F1|X3^Lipid panel^L", False),
        (obr_with("X4^Transthoracic echo^L", "CT"), False),
        (obr_with("X5^Something^L", "LAB"), False),
        (obr_with("X5^Chest X-ray^L", "HM"), False),  # a lab section wins over procedure words
        (obr_with("X6^Something^L", "NM"), True),
        (obr_with("X6^Something^L", "CUS"), False),
        ("OBR|1||F1|X7^Contact us^L", False),  # lower-case "us" is a word, not ultrasound
    ],
)
def test_radiology_classification(obr, radiology):
    (item,) = read_hl7v2(oru("OBX|1|TX|||Some text.||||||F", obr=obr))
    assert isinstance(item, Report) is radiology
    if not radiology:
        assert item.reason is SkipReason.NOT_RADIOLOGY


def test_classification_from_obx_section_codes_alone():
    obr = "OBR|1||F1|PROC9^Local procedure^L"
    (item,) = read_hl7v2(oru("OBX|1|TX|19005-8^Impression^LN||Normal.||||||F", "OBX|2|TX|||Clear.||||||F", obr=obr))
    assert isinstance(item, Report) and item.findings == "Clear." and item.impression == "Normal."


@pytest.mark.parametrize("sep", ["\r", "\n", "\r\n"])
def test_segment_separators(sep):
    (r,) = read_hl7v2(oru(FINDING.format(status="F"), sep=sep))
    assert r.findings == "Lungs are clear."


@pytest.mark.parametrize(
    "data,where",
    [
        (b"", "segment 1"),
        (b"   \r\n", "segment 1"),
        (b"\x00\x01\x02\x03", "segment 1"),
        (b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|X|P|banana\rOBR|1", "MSH-12"),
        (b"MSH|^^^^|A|B", "MSH-2"),
        (b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|X|P|2.5\rPID|1||M1\r", "OBR"),
        (b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|X1|P|2.5\rMSH|^~\\&|A|B|C|D|20240101||ORU^R01|X2|P|2.5", "segment 2"),
        (b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|X|P|2.5\rOB", "segment 2"),
    ],
)
def test_malformed_inline(data, where):
    with pytest.raises(MalformedMessage) as info:
        read_hl7v2(data)
    assert info.value.where == where


def test_received_at_stands_in_for_a_missing_msh7():
    data = oru(FINDING.format(status="F")).replace(b"|20240101121212|", b"||")
    when = datetime(2025, 5, 5, tzinfo=timezone.utc)
    (r,) = read_hl7v2(data, received_at=when)
    assert r.source.message_time == when


def test_latin1_bytes_are_read():
    data = oru("OBX|1|TX|||Kleiner Erguss, Zwerchfell glatt \xe4\xf6\xfc.||||||F".replace("\xe4\xf6\xfc", "AOU"))
    data = data.replace(b"AOU", "äöü".encode("latin-1"))
    (r,) = read_hl7v2(data)
    assert r.findings.endswith("äöü.")
    assert "bytes are not UTF-8: read as cp1252" in r.unmapped


def oru_in(charset: str, findings: str, codec: str) -> bytes:
    """An ORU whose MSH-18 declares ``charset``, its findings OBX encoded with ``codec``."""
    data = oru("OBX|1|TX|59776-5^Procedure Findings^LN||FINDINGS||||||F", version="2.5.1||||||" + charset)
    return data.replace(b"FINDINGS", findings.encode(codec))


def test_msh18_declared_charset_decides():
    # Cyrillic in ISO 8859-5 is valid Windows-1252 too: read by the bytes alone it became mojibake, flagged only
    # as "not UTF-8".
    (r,) = read_hl7v2(oru_in("8859/5", "Правосторонний плевральный выпот.", "iso8859-5"))
    assert r.findings == "Правосторонний плевральный выпот."
    assert not [n for n in r.unmapped if "MSH-18" in n or "UTF-8" in n]
    # Latin-1 bytes that happen to be valid UTF-8 ("Ã©" is C3 A9): MSH-18 8859/1 wins over the bytes.
    (r,) = read_hl7v2(oru_in("8859/1", "Ã©panchement.", "latin-1"))
    assert r.findings == "Ã©panchement."


def test_msh18_iso_ir87_is_read_as_iso_2022_jp():
    # JIS X 0208 bytes include "|" and "^"; decoding must happen before the message is split into fields.
    text = "右胸水あり。気胸なし。"
    assert any(c in text.encode("iso2022_jp") for c in b"|^~&")
    (r,) = read_hl7v2(oru_in("ISO IR87", text, "iso2022_jp"))
    assert r.findings == text


def test_msh18_hex_escape_uses_the_declared_charset():
    (r,) = read_hl7v2(oru_in("8859/7", "\\XE1\\\\XF1\\", "ascii"))  # hex escapes E1, F1 in ISO 8859-7: alpha, rho
    assert r.findings == "αρ"


def test_msh18_that_the_bytes_contradict_falls_back_and_says_so():
    (r,) = read_hl7v2(oru_in("ASCII", "Épanchement pleural droit.", "utf-8"))
    assert r.findings == "Épanchement pleural droit."
    assert "bytes do not match MSH-18 ASCII: read as utf-8" in r.unmapped
    (r,) = read_hl7v2(oru_in("UNICODE UTF-8", "Erguss ä.", "latin-1"))
    assert r.findings == "Erguss ä."
    assert "bytes do not match MSH-18 UNICODE UTF-8: read as cp1252" in r.unmapped


def test_msh18_unsupported_charset_is_named():
    (r,) = read_hl7v2(oru_in("UNICODE UTF-16", "Lungs are clear.", "ascii"))
    assert r.findings == "Lungs are clear."
    assert "MSH-18 character set UNICODE UTF-16 not supported: read as utf-8" in r.unmapped


def test_real_fixture_declaring_utf8_reads_without_charset_remarks():
    path = REF / "gcp_oru_r01_ex1_vitals_v23.hl7"
    msg = parse(path.read_bytes())
    assert msg.charset == "utf-8"
    assert not [n for n in msg.notes if "MSH-18" in n or "UTF-8" in n]


REPORT_LINES = ["FINDINGS: Small left pleural effusion. No pneumothorax.", "IMPRESSION: Small left pleural effusion."]


def ed(subtype: str, raw: bytes, encoding: str = "Base64", kind: str = "AP") -> str:
    data = base64.b64encode(raw).decode() if encoding == "Base64" else raw.hex().upper() if encoding == "Hex" else raw.decode()
    return f"OBX|1|ED|18748-4^Diagnostic imaging study^LN||RIS^{kind}^{subtype}^{encoding}^{data}||||||F"


@pytest.mark.parametrize(
    "obx",
    [
        ed("PDF", text_pdf(REPORT_LINES)),
        ed("application/pdf", text_pdf(REPORT_LINES), "Hex"),
        ed("RTF", rb"{\rtf1\ansi FINDINGS:\par Small left pleural effusion. No pneumothorax.\par "
                  rb"IMPRESSION:\par Small left pleural effusion.\par}", kind="TEXT"),
        ed("HTML", b"<p>FINDINGS: Small left pleural effusion. No pneumothorax.</p>"
                   b"<p>IMPRESSION: Small left pleural effusion.</p>", kind="TEXT"),
    ],
    ids=["pdf-base64", "pdf-hex-mime", "rtf", "html"],
)  # fmt: skip
def test_report_sent_as_an_ed_document_is_read(obx):
    (r,) = read_hl7v2(oru(obx))
    assert r.findings == "Small left pleural effusion. No pneumothorax."
    assert r.impression == "Small left pleural effusion."
    assert not [u for u in r.unmapped if u.startswith("OBX[")]


def test_ed_plain_text_with_escapes():
    (r,) = read_hl7v2(oru("OBX|1|ED|18748-4^Diagnostic imaging study^LN||RIS^TEXT^PLAIN^A^Lungs clear\\.br\\No effusion.||||||F"))
    assert r.findings == "Lungs clear\nNo effusion."


@pytest.mark.parametrize(
    "obx,why",
    [
        (ed("PDF", b"%PDF-1.4 truncated"), "PDF attachment could not be read"),
        (ed("PDF", text_pdf([])), "PDF attachment has no text layer"),
        (ed("PDF", b"x").replace("^eA==", "^not*base64"), "attachment data is not valid Base64"),
        (ed("JPEG", b"\xff\xd8\xff", kind="IM"), "attachment subtype JPEG at ED-3 cannot be read"),
        (ed("", b"\xff\xd8\xff\x00", kind="IM"), "attachment without a data subtype"),
        (ed("application/octet-stream", b"\xff\xd8\xff\x00"), "content type application/octet-stream"),
        ("OBX|1|RP|18748-4^Diagnostic imaging study^LN||https://pacs.example/r/1^RIS^AP^PDF||||||F", "reference pointer"),
    ],
    ids=["broken-pdf", "scanned-pdf", "bad-base64", "image", "no-subtype", "octet-stream", "pointer"],
)  # fmt: skip
def test_unreadable_ed_skips_the_report_and_says_why(obx, why):
    (s,) = read_hl7v2(oru(obx))
    assert isinstance(s, Skipped) and s.reason is SkipReason.NO_FINDINGS
    assert why in s.detail and "OBX[1] " in s.detail


def test_unreadable_ed_beside_text_is_named_and_the_text_is_used():
    (r,) = read_hl7v2(oru(FINDING.format(status="F"), ed("PDF", b"%PDF-1.4 truncated").replace("OBX|1|", "OBX|2|")))
    assert r.findings == "Lungs are clear."
    assert any(u.startswith("OBX[2] ED") and "PDF attachment could not be read" in u for u in r.unmapped)


# ---------------------------------------------------------------------------------------------------------
# Encoding helpers


@pytest.mark.parametrize(
    "raw,text",
    [
        ("a\\T\\b", "a&b"),
        ("a\\S\\b\\R\\c\\E\\d\\F\\e", "a^b~c\\d|e"),
        ("one\\.br\\two", "one\ntwo"),
        ("one\\X0D\\\\X0A\\two", "one\r\ntwo"),
        ("\\H\\bold\\N\\ plain", "bold plain"),
        ("a\\.sp\\b\\.sp 2\\c", "a\nb\n\nc"),
        ("x\\.in+4\\y\\.ti-2\\z\\.fi\\\\.nf\\", "xyz"),
        ("caf\\XC3A9\\", "café"),
        ("\\C2842\\abc\\C2D45\\", "abc"),
        ("lone \\ backslash", "lone \\ backslash"),
        ("unterminated \\T", "unterminated \\T"),
    ],
)
def test_unescape(raw, text):
    assert unescape(raw) == text


def test_escape_round_trips():
    text = "a|b^c&d~e\\f\nsecond line"
    assert unescape(escape(text)).replace("\r\n", "\n") == text
    custom = Delimiters("#", "$", "*", "@", "%")
    assert unescape(escape("50% of #1 $ * @", custom), custom) == "50% of #1 $ * @"


@pytest.mark.parametrize(
    "value,expected",
    [
        ("2024", datetime(2024, 1, 1)),
        ("202403", datetime(2024, 3, 1)),
        ("20240312", datetime(2024, 3, 12)),
        ("2024031210", datetime(2024, 3, 12, 10)),
        ("202403121015", datetime(2024, 3, 12, 10, 15)),
        ("20240312101530.1234", datetime(2024, 3, 12, 10, 15, 30, 123400)),
        ("20240312101530-0500", datetime(2024, 3, 12, 10, 15, 30, tzinfo=timezone(timedelta(hours=-5)))),
        ("201203141259-0215", datetime(2012, 3, 14, 12, 59, tzinfo=timezone(-timedelta(hours=2, minutes=15)))),
        ("20010501141500.0000", datetime(2001, 5, 1, 14, 15)),
        ("Aug 15, 1942", None),
        ("DOB", None),
        ("20241345", None),
        ("", None),
    ],
)
def test_parse_dtm(value, expected):
    assert parse_dtm(value) == expected


@pytest.mark.parametrize(
    "declared,resolved",
    [("2.5.1", "2.5.1"), ("2.2", "2.2"), ("2.8", "2.8"), ("2.9", "2.8.2"), ("2.3.2", "2.3.1"),
     ("2.0", "2.1"), ("2.5.1^USA", "2.5.1"), ("3.0", None), ("banana", None)],
)  # fmt: skip
def test_resolve_version(declared, resolved):
    assert resolve_version(declared.split("^")[0]) == resolved


def test_delimiters_are_validated_with_hl7apy_rules():
    assert read_delimiters("MSH|^~\\&|A").component == "^"
    assert read_delimiters("MSH|^~\\&#|A").truncation == "#"
    for bad in ("MSH|^^\\&|A", "MSH|abcd|A", "MSHA^~\\&|A", "MSH|^~"):
        with pytest.raises(MalformedMessage):
            read_delimiters(bad)


def test_split_segments_ignores_blank_lines_and_numbers_fields_as_the_standard():
    segs = split_segments("MSH|^~\\&|A\r\n\nPID|1||M1\n\n", Delimiters())
    assert [s.name for s in segs] == ["MSH", "PID"]
    assert segs[0][1] == "|" and segs[0][2] == "^~\\&" and segs[0][3] == "A" and segs[1][3] == "M1"
    assert segs[1][99] == ""


# ---------------------------------------------------------------------------------------------------------
# Stream splitting

MSG1 = b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|M1|P|2.5\rPID|1||X"
MSG2 = b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|M2|P|2.5\rPID|1||Y"


@pytest.mark.parametrize(
    "data",
    [
        MSG1 + b"\r" + MSG2 + b"\r",
        MSG1 + b"\n\n" + MSG2,
        b"\xef\xbb\xbf" + MSG1 + b"\r\n" + MSG2 + b"\r\n",
        b"\x0b" + MSG1 + b"\x1c\r\x0b" + MSG2 + b"\x1c\r",
        b"\x0b\xef\xbb\xbf" + MSG1 + b"\r\x1c\r\n\x0b" + MSG2 + b"\x1c\r",
        b"FHS|^~\\&|A\rBHS|^~\\&|A\r" + MSG1 + b"\r" + MSG2 + b"\rBTS|2\rFTS|1\r",
    ],
)
def test_split_stream_variants(data):
    parts = split_hl7_stream(data)
    assert [p.replace(b"\n", b"\r").rstrip(b"\r") for p in parts] == [MSG1, MSG2]


def test_split_stream_keeps_stray_bytes_so_they_fail_loudly():
    parts = split_hl7_stream(b"garbage line\r" + MSG1)
    assert parts == [b"garbage line", MSG1]
    with pytest.raises(MalformedMessage):
        read_hl7v2(parts[0])
    assert split_hl7_stream(b"") == [] and split_hl7_stream(b" \r\n") == []


def test_same_message_same_key():
    a = read_hl7v2(oru(FINDING.format(status="F")))[0].source.key
    b = read_hl7v2(oru(FINDING.format(status="F")))[0].source.key
    c = read_hl7v2(oru(FINDING.format(status="P")))[0].source.key
    assert a == b != c


# ---------------------------------------------------------------------------------------------------------
# OpenI reports wrapped into HL7 v2 at test time


def _openi(n: int) -> list[dict]:
    rows = []
    with OPENI.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row["findings"].strip() and row["impression"].strip():
                rows.append(row)
            if len(rows) == n:
                break
    return rows


def _norm(text: str | None) -> str:
    return " ".join((text or "").split())


def _sentences(text: str) -> list[str]:
    out, cur = [], ""
    for word in text.split(" "):
        cur = f"{cur} {word}" if cur else word
        if word.endswith("."):
            out.append(cur)
            cur = ""
    return out + ([cur] if cur else [])


def test_openi_reports_round_trip_through_coded_hl7v2():
    rows = _openi(300)
    assert len(rows) == 300
    for row in rows:
        obx = [f"OBX|1|TX|18785-6^Reason for study^LN||{escape(row['indication'])}||||||F"] if row["indication"] else []
        for i, sentence in enumerate(_sentences(row["findings"]), start=1):
            obx.append(f"OBX|{len(obx) + 1}|TX|59776-5^Procedure Findings^LN|{i}|{escape(sentence)}||||||F")
        obx.append(f"OBX|{len(obx) + 1}|TX|19005-8^Impression^LN||{escape(row['impression'])}||||||F")
        (r,) = read_hl7v2(oru(*obx))
        assert _norm(r.findings) == _norm(row["findings"]), row["uid"]
        assert _norm(r.impression) == _norm(row["impression"]), row["uid"]
        if row["indication"]:
            assert _norm(r.indication) == _norm(row["indication"])


def test_openi_reports_round_trip_through_headed_free_text():
    rows = _openi(300)
    for row in rows:
        text = f"FINDINGS: {row['findings']}\nIMPRESSION: {row['impression']}"
        if row["comparison"]:
            text = f"COMPARISON: {row['comparison']}\n" + text
        lines = [f"OBX|{i}|TX|18782-3^Radiology Study observation^LN||{escape(ln)}||||||F" for i, ln in enumerate(text.split("\n"), 1)]
        (r,) = read_hl7v2(oru(*lines))
        assert _norm(r.findings) == _norm(row["findings"]), row["uid"]
        assert _norm(r.impression) == _norm(row["impression"]), row["uid"]


# ---------------------------------------------------------------------------------------------------------
# Nothing silently dropped


def _all_reports():
    for folder in (REF, OWN):
        for path in sorted(folder.glob("*.hl7")):
            if path.name.startswith("malformed"):
                continue
            for message in split_hl7_stream(path.read_bytes()):
                for item in read_hl7v2(message):
                    if isinstance(item, Report):
                        yield path.name, message, item


def test_every_segment_lands_in_the_report_or_is_named():
    seen = 0
    for name, message, report in _all_reports():
        msg = parse(message)
        group = msg.groups[report.source.index]
        used_nte = not any(s.name == "OBX" for s in group.members)  # NTE carried the report text
        segments = [s for s in msg.header if s.name not in ("MSH", "PID")] + [
            s for s in group.members if s.name != "OBX" and not (s.name == "NTE" and used_nte)
        ]
        for seg in segments:
            assert any(u.startswith(f"{seg.name}[") for u in report.unmapped), (name, seg.name)
        for obx_number, obx in enumerate((s for s in group.members if s.name == "OBX"), start=1):
            value = obx[5]
            if not value.strip():
                continue
            named = any(u.startswith(f"OBX[{obx_number}] ") for u in report.unmapped)
            line = re.sub(r"^\s*[A-Za-z ]+:\s*", "", unescape(value.split(msg.delims.repetition)[0], msg.delims).split("\n")[0])
            if not line.strip():
                continue  # a heading alone on its line
            first_words = line[:20]
            in_text = any(first_words in (getattr(report, f) or "") for f in ("findings", "impression", "indication", "comparison", "technique"))
            assert named or in_text, (name, obx_number)
        seen += 1
    assert seen >= 14


def test_each_obr_group_takes_its_own_patient():
    data = oru(FINDING.format(status="F")) + b"\rPID|1||M2^^^H^MR\r" + obr_with("71046^XR CHEST^C4", "RAD", "F").encode()
    data += b"\rOBX|1|TX|||Second patient text.||||||F"
    first, second = read_hl7v2(data)
    assert first.patient.value == "M1" and second.patient.value == "M2"
    assert second.findings == "Second patient text." and second.source.index == 1


def test_accession_from_ipc_wins():
    data = oru("IPC|ACC-IPC-9^RIS|STUDY1|1.2.3|SPS1|CT", FINDING.format(status="F"))
    (r,) = read_hl7v2(data)
    assert r.accession == r.identifiers[0] and r.accession.value == "ACC-IPC-9" and r.accession.system == "RIS"
    assert "IPC[1]" in r.unmapped  # only IPC-1 is taken: the study UID and steps are named, not carried
