"""The clinical safety layer inside the pipeline: scope decides what is drafted, the checker flags drafts."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from radbridge.adapters.model.memory import InstantGenerator
from radbridge.cli import app
from radbridge.domain import SkipReason
from radbridge.pipeline import Drafter, Envelope, Mode
from radbridge.scope import Scope

ROOT = Path(__file__).resolve().parents[2]
HL7 = ROOT / "tests" / "fixtures" / "hl7v2"
MANIFEST = ROOT / "model" / "manifest.json"
CHEST_SCOPE = Scope.from_manifest(json.loads(MANIFEST.read_text())["scope"])


def outcome(path: Path, **kwargs):
    drafter = Drafter(InstantGenerator(), mode=Mode.REPLAY, scope=CHEST_SCOPE, **kwargs)
    [out] = drafter.process([Envelope(path.read_bytes(), location=path.name)])
    return out


def test_exams_outside_the_chest_radiograph_scope_are_skipped_naming_what_was_seen():
    # the detail names what decided in our words (never the sender's spelling of the procedure name)
    for name, seen in [("ct_abdomen_headings_crlf_v251.hl7", "NAMES CT"), ("mri_knee_fnd_imp_mllp_bom_v24.hl7", "NAMES MR"),
                       ("us_thyroid_loinc_sections_v28.hl7", "NAMES ULTRASOUND"), ("xr_hand_v22.hl7", "NAMES UPPER LIMB")]:
        out = outcome(HL7 / name)
        assert out.status == "skipped" and out.error is None, name  # never a dead letter: nothing is malformed
        (skip,) = out.skipped
        assert skip.reason is SkipReason.OUT_OF_SCOPE and seen in skip.detail.upper(), (name, skip.detail)
        assert skip.detail.startswith("rule ")


def test_a_chest_radiograph_is_drafted_and_its_provenance_names_the_scope_rule():
    out = outcome(HL7 / "cxr_gdt_suffix_lf_v23.hl7")
    assert out.status == "drafted"
    (prov,) = [e["resource"] for e in out.bundles[0]["entry"] if e["resource"]["resourceType"] == "Provenance"]
    params = {p["url"]: p.get("valueString") for p in prov["extension"][0]["extension"]}
    assert params["scope_rule"] == "code"


class WrongSide(InstantGenerator):
    """Answers every prompt with a draft on the wrong side."""

    def generate(self, prompts, params):
        return [type(g)(text="Right pleural effusion.", finish_reason=g.finish_reason)
                for g in super().generate(prompts, params)]


def test_a_wrong_side_draft_carries_a_detected_issue_and_a_faithful_one_none(tmp_path):
    msg = (
        "MSH|^~\\&|RIS|H|EHR|H|20240101120000||ORU^R01^ORU_R01|SAFE-1|P|2.5.1\r"
        "PID|1||P1^^^H^MR||Doe^Pat\r"
        "OBR|1||ACC1^RIS|71046^XR CHEST 2 VIEWS^C4|||20240101110000||||||||||||||||RAD|P\r"
        "OBX|1|TX|59776-5^Procedure findings^LN||Large left pleural effusion. No pneumothorax.||||||P\r"
    )
    path = tmp_path / "left_effusion.hl7"
    path.write_bytes(msg.encode())
    flagged = Drafter(WrongSide(), scope=CHEST_SCOPE).process([Envelope(path.read_bytes())])[0]
    issues = [e["resource"] for e in flagged.bundles[0]["entry"] if e["resource"]["resourceType"] == "DetectedIssue"]
    assert [i["code"]["coding"][0]["code"] for i in issues] == ["laterality"]
    assert flagged.bundles[0]["entry"][0]["resource"]["status"] == "preliminary"  # flagged or not, still a draft

    class Faithful(InstantGenerator):
        def generate(self, prompts, params):
            return [type(g)(text="Large left pleural effusion.", finish_reason=g.finish_reason)
                    for g in super().generate(prompts, params)]

    clean = Drafter(Faithful(), scope=CHEST_SCOPE).process([Envelope(path.read_bytes())])[0]
    assert clean.status == "drafted"
    assert not [e for e in clean.bundles[0]["entry"] if e["resource"]["resourceType"] == "DetectedIssue"]


def test_draft_command_applies_the_manifest_scope(monkeypatch):
    monkeypatch.setenv("RADBRIDGE_MANIFEST_FILE", str(MANIFEST))
    result = CliRunner().invoke(app, ["draft", "--backend", "instant", "--mode", "replay", str(HL7 / "ct_abdomen_headings_crlf_v251.hl7"),
                                      str(HL7 / "cxr_gdt_suffix_lf_v23.hl7")])
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["status"] == "skipped" and lines[0]["skipped"][0]["reason"] == "out_of_scope"
    assert lines[1]["resourceType"] == "Bundle"
    monkeypatch.setenv("RADBRIDGE_SCOPE_CODES", "74177")  # a site widening the scope with its own code
    result = CliRunner().invoke(app, ["draft", "--backend", "instant", "--mode", "replay", str(HL7 / "ct_abdomen_headings_crlf_v251.hl7")])
    assert json.loads(result.stdout.splitlines()[0])["resourceType"] == "Bundle"


def test_a_message_cut_mid_findings_is_drafted_with_an_input_flag(tmp_path):
    msg = (
        "MSH|^~\\&|RIS|H|EHR|H|20240101120000||ORU^R01^ORU_R01|CUT-1|P|2.5.1\r"
        "PID|1||P1^^^H^MR||Doe^Pat\r"
        "OBR|1||ACC1^RIS|71046^XR CHEST 2 VIEWS^C4|||20240101110000||||||||||||||||RAD|P\r"
        "OBX|1|TX|59776-5^Procedure findings^LN||Heart size normal. Lun||||||P\r"
    )
    [out] = Drafter(InstantGenerator(), scope=CHEST_SCOPE).process([Envelope(msg.encode())])
    codes = [e["resource"]["code"]["coding"][0]["code"] for e in out.bundles[0]["entry"]
             if e["resource"]["resourceType"] == "DetectedIssue"]
    assert codes == ["input-truncated"]
