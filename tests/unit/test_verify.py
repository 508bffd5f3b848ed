"""The draft checker: one test per kind of flag, the cases that must stay silent, and odd input."""

from __future__ import annotations

import random

import pytest

from radbridge.samples import openi_reports
from radbridge.verify import MAX_CHARS, FlagKind, check, laterality_disagreements


def kinds(draft: str, findings: str) -> list[tuple[str, str, str]]:
    return [(f.kind.value, f.observation, f.severity) for f in check(draft, findings).flags]


def test_wrong_side_is_a_high_laterality_flag_naming_both_sides():
    (flag,) = check("Right pleural effusion.", "Large left pleural effusion.").flags
    assert (flag.kind, flag.observation, flag.severity) == (FlagKind.LATERALITY, "Pleural Effusion", "high")
    assert flag.draft_sides == ("right",) and flag.findings_sides == ("left",)
    assert "right" in flag.detail and "left" in flag.detail


def test_normal_draft_over_a_pneumothorax_is_a_high_omission():
    assert kinds("No acute cardiopulmonary abnormality.", "Large right pneumothorax with mediastinal shift.") == [
        ("omission", "Pneumothorax", "high")
    ]


def test_a_draft_that_leaves_a_finding_out_without_calling_the_study_normal_is_a_moderate_omission():
    assert kinds("Cardiomegaly.", "The heart is enlarged. Small left pleural effusion.") == [
        ("omission", "Pleural Effusion", "moderate")
    ]


@pytest.mark.parametrize(
    "draft,findings",
    [("No pneumothorax.", "Small right apical pneumothorax."), ("Left pleural effusion.", "No pleural effusion.")],
)
def test_draft_and_findings_disagreeing_on_presence_is_a_contradiction(draft, findings):
    assert kinds(draft, findings)[0][:2] == ("contradiction", kinds(draft, findings)[0][1])
    assert kinds(draft, findings)[0][2] == "high"


def test_an_observation_the_findings_never_mention_is_unsupported():
    assert kinds("Right upper lobe pneumonia.", "Heart size normal. Lungs are clear.")[0][:2] == ("unsupported", "Pneumonia")


@pytest.mark.parametrize(
    "draft,findings",
    [
        ("No acute cardiopulmonary abnormality.", "Heart size normal. Lungs clear. No effusion or pneumothorax."),
        ("Small left pleural effusion.", "There is a small left pleural effusion."),
        ("Bilateral effusions.", "Small bilateral pleural effusions."),
        ("Possible left lower lobe pneumonia.", "Left lower lobe opacity, possibly pneumonia."),
    ],
)
def test_a_faithful_draft_gets_no_flag(draft, findings):
    assert check(draft, findings).flags == ()


def test_flags_never_quote_the_report():
    findings = "Patient John Smith 1.2 cm nodule in the left upper lobe."
    for flag in check("No acute disease.", findings).flags:
        assert "John" not in flag.detail and "1.2" not in flag.detail


def test_evaluation_laterality_count_is_the_checker_flag():
    assert laterality_disagreements("Right pleural effusion.", "Left pleural effusion.") == ["Pleural Effusion"]
    assert laterality_disagreements("Left pleural effusion.", "Left pleural effusion.") == []


def test_odd_and_huge_text_never_raises_and_long_text_is_marked_truncated():
    rng = random.Random(7)
    alphabet = "abcdefghij LEFTright.,;:()[]{}\\|^~&\n\r\t\x00\x0b\x1cé漢🙂-"
    for _ in range(300):
        a = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300)))
        b = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300)))
        check(a, b)
    check(None, None)
    assert check("ok", "effusion. " * (MAX_CHARS // 5)).truncated


def test_checker_runs_on_every_openi_findings_text():
    reports = openi_reports()
    if not reports:
        pytest.skip("OpenI data not beside the repository")
    for r in reports:
        check(r.get("impression") or "", r.get("findings") or "")


@pytest.mark.parametrize(
    "findings,kind",
    [("Heart size normal. Lun", "input-truncated"), ("Small left effusion and", "input-truncated"),
     ("Heart size normal. Lungs cle\ufffdr.", "input-garbled"), ("Heart normal.\x07 Lungs clear.", "input-garbled")],
)
def test_input_problems_are_flagged(findings, kind):
    from radbridge.verify import check_input

    assert [f.kind.value for f in check_input(findings)] == [kind]


def test_a_contradicted_character_set_is_flagged_from_the_reader_note_without_text():
    from radbridge.verify import check_input

    (flag,) = check_input("Lungs clear.", ("bytes do not match MSH-18 8859/1: read as utf-8", "OBX[2] CE ignored"))
    assert flag.kind.value == "input-charset" and "8859/1" in flag.detail


def test_complete_findings_get_no_input_flag_across_openi():
    from radbridge.verify import check_input

    reports = openi_reports()
    if not reports:
        pytest.skip("OpenI data not beside the repository")
    assert sum(1 for r in reports if check_input(r.get("findings"))) == 0
