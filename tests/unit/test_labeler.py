"""The rule-based labeler on sentences written for these tests (negation, uncertainty, laterality)."""

import pytest

from radbridge.labeler import NO_FINDING, OBSERVATIONS, label


def test_fourteen_chexpert_observations():
    assert len(OBSERVATIONS) == 14
    assert {"Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Support Devices", NO_FINDING} <= set(OBSERVATIONS)


@pytest.mark.parametrize(
    "text, obs, expected",
    [
        ("Small left pleural effusion.", "Pleural Effusion", "positive"),
        ("No pneumothorax.", "Pneumothorax", "negative"),
        ("There is no evidence of pneumothorax.", "Pneumothorax", "negative"),
        ("Pneumothorax is not seen.", "Pneumothorax", "negative"),
        ("The previously seen effusion has resolved.", "Pleural Effusion", "negative"),
        ("Without focal consolidation.", "Consolidation", "negative"),
        ("Pneumonia cannot be excluded.", "Pneumonia", "uncertain"),
        ("Cannot exclude a small right effusion.", "Pleural Effusion", "uncertain"),
        ("Possible right lower lobe pneumonia.", "Pneumonia", "uncertain"),
        ("Opacity may represent atelectasis.", "Atelectasis", "uncertain"),
        ("The heart is mildly enlarged.", "Cardiomegaly", "positive"),
        ("Cardiomegaly.", "Cardiomegaly", "positive"),
        ("Healed fracture of the left 6th rib.", "Fracture", "positive"),
        ("Calcified granuloma in the right upper lobe.", "Lung Lesion", "positive"),
        ("Interval placement of a left-sided pacemaker.", "Support Devices", "positive"),
        ("Mild pulmonary edema.", "Edema", "positive"),
        ("Bibasilar atelectasis.", "Atelectasis", "positive"),
    ],
)
def test_mention_labels(text, obs, expected):
    assert label(text).labels.get(obs) == expected


def test_negation_spans_a_list_but_not_a_new_statement():
    listed = label("No pneumothorax, pleural effusion, or focal airspace disease.").labels
    assert listed["Pneumothorax"] == listed["Pleural Effusion"] == listed["Lung Opacity"] == "negative"
    mixed = label("No effusion, the heart is enlarged.").labels
    assert mixed["Pleural Effusion"] == "negative"
    assert mixed["Cardiomegaly"] == "positive"


def test_contrast_word_ends_negation():
    labels = label("No pneumothorax but there is a small right effusion.").labels
    assert labels["Pneumothorax"] == "negative"
    assert labels["Pleural Effusion"] == "positive"


def test_positive_mention_wins_over_negative_one():
    assert label("No left effusion. Small right effusion.").labels["Pleural Effusion"] == "positive"


def test_no_finding_only_when_nothing_abnormal():
    assert label("No acute cardiopulmonary abnormality.").labels.get(NO_FINDING) == "positive"
    assert label("Lungs are clear. No pneumothorax or effusion.").labels.get(NO_FINDING) == "positive"
    assert NO_FINDING not in label("Small left effusion.").labels
    assert NO_FINDING not in label("Possible pneumonia.").labels
    # devices alone do not make a study abnormal (CheXpert's convention)
    assert label("Pacemaker in place. Lungs clear.").labels.get(NO_FINDING) == "positive"


def test_laterality():
    assert label("Small left pleural effusion.").sides["Pleural Effusion"] == {"left"}
    assert label("Right upper lobe opacity.").sides["Lung Opacity"] == {"right"}
    assert label("Bilateral pleural effusions.").sides["Pleural Effusion"] == {"left", "right"}
    # negated mentions carry no side; the heart has none to get wrong
    assert "Pneumothorax" not in label("No left pneumothorax.").sides
    assert "Cardiomegaly" not in label("Cardiomegaly with left effusion.").sides


def test_deidentification_tokens_do_not_confuse_it():
    assert label("Normal chest x-XXXX.").labels == {NO_FINDING: "positive"}
    assert label("XXXX right lower lobe opacity.").labels["Lung Opacity"] == "positive"
