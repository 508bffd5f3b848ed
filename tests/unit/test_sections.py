"""The heading-based section splitter shared by the HL7 v2 and FHIR readers."""

from __future__ import annotations

import pytest

from radbridge.sections import HEADINGS, Sections, split_sections


def test_empty_and_blank_text():
    assert split_sections(None) == Sections()
    assert split_sections("  \n\t") == Sections()


def test_no_heading_keeps_everything_as_preamble():
    s = split_sections("Heart size normal.\n\nLungs clear.")
    assert s.preamble == "Heart size normal.\nLungs clear."
    assert s.findings is None and not s.has_headings


def test_headings_at_line_start_any_case_and_spelling():
    text = (
        "EXAMINATION: CT head without contrast\n"
        "Clinical History: fall from standing\n"
        "comparisons: none\n"
        "Findings: No hemorrhage.\n"
        "No mass effect.\n"
        "CONCLUSION: Normal study.\n"
        "Recommendations: none"
    )
    s = split_sections(text)
    assert s.technique == "CT head without contrast"
    assert s.indication == "fall from standing"
    assert s.comparison == "none"
    assert s.findings == "No hemorrhage.\nNo mass effect."
    assert s.impression == "Normal study."
    assert s.recommendation == "none"
    assert s.headings == ("technique", "indication", "comparison", "findings", "impression", "recommendation")
    assert s.preamble is None


def test_text_before_the_first_heading_is_the_preamble():
    s = split_sections("CHEST PA AND LATERAL\nFINDINGS: Clear.\nIMPRESSION: Normal.")
    assert s.preamble == "CHEST PA AND LATERAL"
    assert (s.findings, s.impression) == ("Clear.", "Normal.")


def test_inline_capital_headings_on_one_line():
    s = split_sections("FINDINGS: Small left effusion. IMPRESSION: Effusion; no consolidation.")
    assert s.findings == "Small left effusion."
    assert s.impression == "Effusion; no consolidation."


def test_title_case_heading_after_a_sentence_end():
    s = split_sections("Findings: Heart normal. Impression: No acute disease.")
    assert (s.findings, s.impression) == ("Heart normal.", "No acute disease.")


def test_lower_case_heading_word_inside_prose_is_not_a_heading():
    s = split_sections("Findings: the overall impression: stable nodule. Summary of prior imaging is attached.")
    assert s.findings == "the overall impression: stable nodule. Summary of prior imaging is attached."
    assert s.impression is None


def test_bare_heading_alone_on_its_line():
    s = split_sections("FINDINGS\nHeart normal.\nLungs clear.\n\nIMPRESSION\n1. Normal chest.\n2. No change.")
    assert s.findings == "Heart normal.\nLungs clear."
    assert s.impression == "1. Normal chest.\n2. No change."


def test_dash_headings():
    s = split_sections("Findings - heart normal.\nImpression - fine.")
    assert (s.findings, s.impression) == ("heart normal.", "fine.")


def test_repeated_headings_are_joined_in_order():
    s = split_sections("FINDINGS: Chest clear.\nIMPRESSION: Normal chest.\nFINDINGS: Abdomen unremarkable.")
    assert s.findings == "Chest clear.\nAbdomen unremarkable."
    assert s.headings == ("findings", "impression")


def test_empty_section_is_none():
    s = split_sections("FINDINGS:\nIMPRESSION: Normal.")
    assert s.findings is None and s.impression == "Normal." and s.headings == ("findings", "impression")


def test_windows_line_endings_and_surrounding_whitespace_are_tidied():
    s = split_sections("  FINDINGS:   Clear lungs.  \r\n\r\n  IMPRESSION:\r\n   Normal.  \r\n")
    assert (s.findings, s.impression) == ("Clear lungs.", "Normal.")


@pytest.mark.parametrize("name,spellings", sorted(HEADINGS.items()))
def test_every_spelling_is_recognised(name, spellings):
    for spelling in spellings:
        s = split_sections(f"{spelling.upper()}: some text")
        assert getattr(s, name) == "some text", spelling
        s = split_sections(f"{spelling.title()}:\nsome text")
        assert getattr(s, name) == "some text", spelling


def test_compound_heading_counts_as_its_first_known_part():
    from radbridge.sections import split_sections

    s = split_sections("INDICATION/CLINICAL QUESTION: cough\nFINDINGS: clear lungs\nIMPRESSION: normal")
    assert (s.indication, s.findings, s.impression) == ("cough", "clear lungs", "normal")
