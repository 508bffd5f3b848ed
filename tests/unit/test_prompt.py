import pytest

from radbridge import prompt
from radbridge.prompt import Example, PromptTemplate


def test_default_template_uses_the_papers_instruction_and_only_findings():
    p = prompt.build(prompt.DEFAULT_TEMPLATE, "  Heart size normal.\n Lungs clear. ", indication="cough", comparison="none")
    assert p.template_id == "paper-v1"
    assert p.user == "Derive the impression from findings in the radiology report.\n\nFindings: Heart size normal. Lungs clear."
    assert "cough" not in p.user


def test_optional_context_and_examples_are_rendered_and_recorded_in_the_id():
    t = PromptTemplate(include_indication=True, include_comparison=True, n_examples=2)
    exs = [Example("Lungs clear.", "Normal."), Example("Left effusion.", "Left pleural effusion."), Example("x", "y")]
    p = prompt.build(t, "Right lower lobe opacity.", indication="fever", comparison="", examples=exs)
    assert p.template_id == "paper-v1+indication+comparison+examples2"
    assert "Example 1:\nFindings: Lungs clear.\nImpression: Normal." in p.user
    assert "Example 3" not in p.user
    assert "Indication: fever\nFindings: Right lower lobe opacity." in p.user
    assert "Comparison" not in p.user  # empty comparison is left out, not rendered blank


@pytest.mark.parametrize(
    "t", [PromptTemplate(), PromptTemplate(include_indication=True), PromptTemplate(n_examples=3, version=2)]
)
def test_template_id_round_trips(t):
    assert PromptTemplate.from_id(t.id) == t


def test_unknown_template_id_is_refused():
    with pytest.raises(ValueError):
        PromptTemplate.from_id("mystery-v1")


def test_chatml_rendering_ends_at_the_assistant_turn():
    p = prompt.build(prompt.DEFAULT_TEMPLATE, "Lungs clear.")
    text = prompt.render(p, "chatml")
    assert text.startswith("<|im_start|>system\n")
    assert text.endswith("<|im_start|>assistant\n")
    assert [m["role"] for m in prompt.messages(p)] == ["system", "user"]


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("No acute disease.<|im_end|>\n<|im_start|>user", "No acute disease."),
        ("Impression: Small left effusion.", "Small left effusion."),
        ("  CONCLUSION:   Normal   chest.  ", "Normal chest."),
        ("Cardiomegaly.</s>", "Cardiomegaly."),
    ],
)
def test_clean_completion(raw, expected):
    assert prompt.clean_completion(raw) == expected


def test_lines_of_report_text_stay_separate_sentences():
    p = prompt.build(prompt.DEFAULT_TEMPLATE, "Heart normal\nLungs clear.\n\nNo effusion")
    assert p.user.endswith("Findings: Heart normal. Lungs clear. No effusion")
