"""Sign-off comparison: how the radiologist changed the draft, and whether the checker's flags were acted on."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from radbridge.feedback import SignoffOutcome, compare, word_edit_distance
from radbridge.verify import check


@pytest.mark.parametrize(
    "draft,signed,outcome",
    [
        ("No acute cardiopulmonary abnormality.", "No acute cardiopulmonary abnormality", SignoffOutcome.ACCEPTED),
        ("No acute cardiopulmonary abnormality.", "no  acute, cardiopulmonary abnormality!", SignoffOutcome.ACCEPTED),
        ("Small left pleural effusion. No pneumothorax.", "Small left pleural effusion. No pneumothorax seen.",
         SignoffOutcome.LIGHT_EDIT),
        ("Small left pleural effusion.", "Small left pleural effusion with adjacent atelectasis, likely.",
         SignoffOutcome.HEAVY_EDIT),
        ("No acute cardiopulmonary abnormality.", "Large right pneumothorax with mediastinal shift.",
         SignoffOutcome.REPLACED),
    ],
)
def test_outcome_classes(draft, signed, outcome):
    assert compare(draft, signed).outcome is outcome


def test_word_edit_distance():
    assert word_edit_distance("a b c".split(), "a x c d".split()) == 2
    assert word_edit_distance([], ["a"]) == 1


def test_clinical_differences_and_flag_fates():
    findings = "Large left pleural effusion. Small right apical pneumothorax."
    draft = "Right pleural effusion."
    flags = check(draft, findings).flags  # laterality (effusion), omission (pneumothorax)
    t0 = datetime(2026, 1, 1, 9, tzinfo=timezone.utc)
    c = compare(draft, "Left pleural effusion. Small right apical pneumothorax.", flags,
                drafted_at=t0, signed_at=t0 + timedelta(minutes=7))
    assert c.added == ("Pneumothorax",) and c.removed == ()
    assert c.laterality_changed == ("Pleural Effusion",)
    assert {(f.kind, f.observation, f.acted_on) for f in c.flags} == {
        ("laterality", "Pleural Effusion", True), ("omission", "Pneumothorax", True)}
    assert c.seconds_to_sign == 420
    ignored = compare(draft, draft, flags)
    assert ignored.outcome is SignoffOutcome.ACCEPTED and all(f.acted_on is False for f in ignored.flags)


def test_the_record_holds_no_text():
    c = compare("Patient Doe: small effusion.", "Small effusion, Doe.")
    text = str(c.as_dict())
    assert "Doe" not in text and "small" not in text.lower()  # observation names and numbers only
