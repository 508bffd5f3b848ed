"""Draft -> HL7 v2.5.1 ORU^R01: parsed back with hl7apy, text decoded back exactly, deterministic."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import pytest
from hl7apy.parser import parse_message

from radbridge.formats.hl7v2.er7 import unescape
from radbridge.formats.hl7v2.writer import build_oru, escape
from radbridge.domain import Coding, Draft, GenerationParams, Identifier, ModelInfo, Report, SourceRef
from radbridge.ids import message_control_id

RECORDED = datetime(2025, 3, 4, 10, 30, tzinfo=timezone.utc)
NASTY = "1. No pneumothorax | effusion ^ left & right ~ C:\\path \\F\\ literal.\r\n2. Stable\x0bheart.\n3. Done."


def make_draft(impression: str = "No acute disease.", *, index: int = 0, **fields) -> Draft:
    source = SourceRef(format="hl7v2", sha256=hashlib.sha256(b"src").hexdigest(), message_id="CTRL1", index=index)
    report_fields = dict(
        status="preliminary",
        procedure=Coding("http://loinc.org", "36643-5", "XR Chest 2 Views"),
        patient=Identifier("555-44", "HOSP", "MR"),
        identifiers=(
            Identifier("ORD-1", "EHR", "PLAC"),
            Identifier("FIL-2", "RIS", "FILL"),
            Identifier("ACC-9", "RIS", "ACSN"),
        ),
        effective=datetime(2025, 3, 4, 9, 15),
        findings="x",
    )
    report_fields.update(fields)
    return Draft(
        report=Report(source=source, **report_fields),
        impression=impression,
        prompt_version="paper-v1",
        model=ModelInfo(backend="local", base_model="SmolLM2-135M-Instruct", adapter="rad-lora"),
        params=GenerationParams(),
    )


def parsed(data: bytes):
    return parse_message(data.decode("utf-8"), find_groups=True)


def observation(msg):
    return msg.ORU_R01_PATIENT_RESULT.ORU_R01_ORDER_OBSERVATION.ORU_R01_OBSERVATION


def fields(data: bytes, segment: str) -> list[str]:
    (line,) = [s for s in data.decode().split("\r") if s.startswith(segment + "|")]
    return line.split("|")


def test_parses_back_with_hl7apy():
    d = make_draft()
    data = build_oru(d, recorded=RECORDED)
    assert b"\n" not in data and data.endswith(b"\r")
    msg = parsed(data)
    assert msg.msh.msh_9.value == "ORU^R01^ORU_R01"
    assert msg.msh.msh_10.value == message_control_id(d.report.source.key)
    assert msg.msh.msh_12.value == "2.5.1"
    assert msg.msh.msh_7.value == "20250304103000+0000"
    order = msg.ORU_R01_PATIENT_RESULT.ORU_R01_ORDER_OBSERVATION
    assert msg.ORU_R01_PATIENT_RESULT.ORU_R01_PATIENT.PID.pid_3.value == "555-44^^^HOSP^MR"
    assert order.OBR.obr_2.value == "ORD-1^EHR"
    assert order.OBR.obr_3.value == "FIL-2^RIS"
    assert order.OBR.obr_4.value == "36643-5^XR Chest 2 Views^LN"
    assert order.OBR.obr_18.value == "ACC-9"
    assert order.OBR.obr_25.value == "P"
    obx = observation(msg).OBX
    assert obx.obx_2.value == "FT"
    assert obx.obx_3.value == "19005-8^Impression^LN"
    assert obx.obx_11.value == "P"
    assert obx.obx_5.value == "No acute disease."
    nte = observation(msg).NTE
    assert "requires radiologist review" in nte.nte_3.value


def test_text_is_escaped_and_decodes_back_exactly():
    data = build_oru(make_draft(NASTY), recorded=RECORDED)
    assert data.count(b"\r") == 6  # MSH PID ORC OBR OBX NTE: no segment break from the text
    obx = fields(data, "OBX")
    assert obx[2] == "FT"
    raw = obx[5]
    assert "\\.br\\" in raw and "\\F\\" in raw and "\\S\\" in raw and "\\T\\" in raw and "\\R\\" in raw
    assert "\\E\\" in raw and "\\X0B\\" in raw
    expected = NASTY.replace("\r\n", "\n")
    assert unescape(raw) == expected
    # hl7apy sees one field (no delimiter leaked); it re-escapes formatting commands when it re-serialises,
    # so the exact text is checked with the decoder above
    assert len(observation(parsed(data)).OBX.obx_5) == 1


def test_tx_variant_uses_repetitions_for_lines():
    data = build_oru(make_draft("Line one.\nLine | two."), recorded=RECORDED, value_type="TX")
    obx = observation(parsed(data)).OBX
    assert obx.obx_2.value == "TX"
    assert [unescape(r.value) for r in obx.obx_5] == ["Line one.", "Line | two."]
    with pytest.raises(ValueError):
        build_oru(make_draft(), recorded=RECORDED, value_type="ST")  # type: ignore[arg-type]


def test_deterministic_and_distinct_per_report():
    first = build_oru(make_draft(), recorded=RECORDED)
    assert first == build_oru(make_draft(), recorded=RECORDED)
    other = build_oru(make_draft(index=1), recorded=RECORDED)
    assert fields(first, "MSH")[9] != fields(other, "MSH")[9]
    assert len(fields(first, "MSH")[9]) <= 20


def test_uri_identifiers_and_sending_application():
    d = make_draft(
        patient=Identifier("P&1", "urn:oid:1.2.3", "MR"),
        identifiers=(Identifier("ACC-9", "urn:oid:1.2.4", "ACSN"),),
        procedure=None,
    )
    data = build_oru(d, recorded=RECORDED, sending_app="RB^X", sending_facility="RAD")
    msh = fields(data, "MSH")
    assert msh[2:4] == ["RB\\S\\X", "RAD"]
    assert fields(data, "PID")[3] == "P\\T\\1^^^&urn:oid:1.2.3&URI^MR"
    obr = fields(data, "OBR")
    assert obr[3] == "ACC-9^^urn:oid:1.2.4^URI"  # no filler number: the accession stands in
    assert obr[4] == ""
    msg = parsed(data)
    assert msg.ORU_R01_PATIENT_RESULT.ORU_R01_PATIENT.PID.pid_3.pid_3_4.value == "&urn:oid:1.2.3&URI"


@pytest.mark.parametrize(
    "text, expected",
    [("a|b", "a\\F\\b"), ("a^b", "a\\S\\b"), ("a&b", "a\\T\\b"), ("a~b", "a\\R\\b"), ("a\\b", "a\\E\\b"),
     ("a\nb", "a\\.br\\b"), ("a\rb", "a\\.br\\b"), ("a\x1cb", "a\\X1C\\b"), ("tab\tkept", "tab\tkept")],
)
def test_escape(text, expected):
    assert escape(text) == expected


def test_checker_flags_become_nte_segments_after_the_draft():
    from dataclasses import replace as _replace

    from radbridge.verify import check

    d = make_draft()
    flagged = _replace(d, impression="Right pleural effusion.",
                       flags=check("Right pleural effusion.", "Large left pleural effusion.").flags)
    segments = build_oru(flagged, recorded=RECORDED).decode().split("\r")
    notes = [s for s in segments if s.startswith("NTE|")]
    assert len(notes) == 2 and notes[1].startswith("NTE|2|O|CHECK HIGH laterality: ") and notes[1].endswith("|RE")
    assert [s for s in build_oru(d, recorded=RECORDED).decode().split("\r") if s.startswith("NTE|")] == [notes[0]]
