"""`radbridge draft`: one JSON line per drafted report, or per message that drafted nothing (why); exit status says
whether anything was malformed."""

import json
from pathlib import Path

from typer.testing import CliRunner

from radbridge.formats.fhir.writer import validate_bundle
from radbridge.cli import app

FIX = Path(__file__).resolve().parents[1] / "fixtures"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "fixtures-ref"


def run(*args):
    result = CliRunner().invoke(app, ["draft", "--backend", "instant", *map(str, args)])
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return result.exit_code, lines


def test_drafts_and_skips_exit_zero_with_one_line_per_message():
    code, lines = run(
        FIX / "hl7v2" / "batch_fhs_bhs_three_messages_v25.hl7",  # three messages in one file
        FIX / "fhir" / "dr_plain_headings_preliminary.json",
        SHARED / "hl7v2" / "mirth_ORU_cbc_v23.hl7",  # a lab result
    )
    assert code == 0
    assert len(lines) == 5
    reasons = [line["skipped"][0]["reason"] if line.get("status") == "skipped" else line["resourceType"] for line in lines]
    assert reasons == ["already_signed", "already_signed", "not_a_result", "Bundle", "not_radiology"]
    validate_bundle(lines[3])
    assert lines[3]["type"] == "transaction"


def test_a_message_with_two_radiology_reports_prints_one_bundle_per_report():
    code, lines = run(FIX / "hl7v2" / "multi_obr_two_rad_one_lab_v251.hl7", "--mode", "replay")
    assert code == 0 and len(lines) == 2
    keys = []
    for bundle in lines:
        validate_bundle(bundle)
        (dr,) = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]
        keys += [i["value"] for i in dr["identifier"] if i.get("system") == "urn:radbridge:draft"]
    assert len(set(keys)) == 2 and len({k.rsplit("-", 1)[0] for k in keys}) == 1  # one message, two reports

def test_malformed_input_gives_an_error_record_and_nonzero_exit():
    code, lines = run(FIX / "hl7v2" / "malformed_no_msh9.hl7", FIX / "fhir" / "malformed.json", FIX / "fhir" / "dr_plain_headings_preliminary.json")
    assert code == 1
    errors = [line for line in lines if line.get("status") == "error"]
    assert len(errors) == 2 and all(e["error"] == "malformed" and e["reason"] for e in errors)
    assert any(line.get("resourceType") == "Bundle" for line in lines)  # the good file is still drafted


def test_signed_report_is_skipped_live_and_drafted_in_replay():
    signed = FIX / "fhir" / "dr_html_final_conclusion.json"
    _, [live] = run(signed)
    assert live["status"] == "skipped" and live["skipped"][0]["reason"] == "already_signed"
    _, [replay] = run("--mode", "replay", signed)
    assert replay["resourceType"] == "Bundle"


def test_oru_flag_adds_a_preliminary_hl7_draft_after_the_bundle():
    code, lines = run("--oru", FIX / "fhir" / "dr_plain_headings_preliminary.json")
    assert code == 0
    assert lines[0]["resourceType"] == "Bundle"
    assert lines[1]["status"] == "oru"
    segments = lines[1]["hl7v2"].split("\r")
    assert segments[0].startswith("MSH|") and "ORU^R01" in segments[0]
    obx = [s.split("|") for s in segments if s.startswith("OBX|")]
    assert obx and obx[0][11] == "P"
