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
        ("Mild interstitial edema. .", "Mild interstitial edema."),  # loose stops after the sentence's own
        ("1. Fracture of the 7th rib. . . 2. Atelectasis. .", "1. Fracture of the 7th rib. 2. Atelectasis."),
        ("Stable... no change.", "Stable... no change."),  # an ellipsis is the writer's
    ],
)
def test_clean_completion(raw, expected):
    assert prompt.clean_completion(raw) == expected


def test_lines_of_report_text_stay_separate_sentences():
    p = prompt.build(prompt.DEFAULT_TEMPLATE, "Heart normal\nLungs clear.\n\nNo effusion")
    assert p.user.endswith("Findings: Heart normal. Lungs clear. No effusion")


COPY = PromptTemplate(n_examples=2, show_similarity=True, copy_normal=True)
NORMAL_NEAREST = [Example("Left effusion.", "Small left pleural effusion.", 0.41),
                  Example("Heart normal. Lungs clear.", "No acute cardiopulmonary abnormality.", 0.93)]  # fmt: skip


def test_copynormal_round_trips_and_leaves_the_prompt_text_alone():
    assert COPY.id == "paper-v1+examples2+sim+copynormal"
    assert PromptTemplate.from_id(COPY.id) == COPY
    plain = PromptTemplate(n_examples=2, show_similarity=True)
    assert prompt.build(COPY, "Lungs clear.", examples=NORMAL_NEAREST).user == prompt.build(plain, "Lungs clear.", examples=NORMAL_NEAREST).user


@pytest.mark.parametrize(
    "draft,examples,expected",
    [
        # both normal: the most similar report's wording, verbatim
        ("No acute disease.", NORMAL_NEAREST, "No acute cardiopulmonary abnormality."),
        # the model found something: its own text, always
        ("Small right pneumothorax.", NORMAL_NEAREST, "Small right pneumothorax."),
        # the nearest report was abnormal: the model's normal draft stands (no finding is imported)
        ("No acute disease.", [NORMAL_NEAREST[1], Example("Left effusion.", "Small left pleural effusion.", 0.95)],
         "No acute disease."),
        # negated findings are not abnormal: "No pneumothorax." is a normal draft
        ("No pneumothorax or effusion.", NORMAL_NEAREST, "No acute cardiopulmonary abnormality."),
        ("No acute disease.", [], "No acute disease."),
    ],
    ids=["both-normal", "model-abnormal", "nearest-abnormal", "negated", "no-examples"],
)
def test_settle_copies_wording_only_when_both_are_normal(draft, examples, expected):
    p = prompt.build(COPY, "Findings here.", examples=examples)
    text, source = prompt.settle(COPY, p, draft)
    assert text == expected
    assert (source is not None) == (text != draft)
    if source is not None:
        assert source.similarity == 0.93


def test_settle_does_nothing_without_the_flag():
    t = PromptTemplate(n_examples=2, show_similarity=True)
    p = prompt.build(t, "Findings here.", examples=NORMAL_NEAREST)
    assert prompt.settle(t, p, "No acute disease.") == ("No acute disease.", None)


def test_ship_serves_only_templates_that_build_the_trained_prompt():
    from training.ship import serving_template

    trained = "paper-v1+examples2+exwords20+sim"
    assert serving_template(trained, None) == trained
    assert serving_template(trained, trained + "+copynormal") == trained + "+copynormal"
    with pytest.raises(ValueError, match="other prompts"):
        serving_template(trained, "paper-v1+examples3+exwords20+sim")


def test_findings_settings_are_part_of_the_template_id():
    t = PromptTemplate(n_examples=2, example_findings_words=20, show_similarity=True, findings_words=60,
                       drop_xxxx=True, drop_prior_sentences=True, copy_normal=True)
    assert t.id == "paper-v1+examples2+exwords20+sim+fwords60+dropxxxx+dropprior+copynormal"
    assert PromptTemplate.from_id(t.id) == t


@pytest.mark.parametrize("bad", ["paper-v1+fwords", "paper-v1+examples", "paper-v1+sim2", "paper-v1+copynormals"])
def test_unknown_or_malformed_flags_are_refused(bad):
    with pytest.raises(ValueError):
        PromptTemplate.from_id(bad)


def test_findings_are_cleaned_then_cut_in_the_prompt():
    long = "Heart size normal.There is no effusion. " + " ".join(f"w{i}" for i in range(80)) + "."
    t = PromptTemplate(findings_words=10)
    shown = prompt.build(t, long).user.split("Findings: ")[1]
    assert shown == "Heart size normal. There is no effusion. w0 w1 w2"  # "normal.There" is two words
    assert prompt.build(PromptTemplate(), long).user.endswith("w79.")  # no cut unless the template says so


def test_clean_rules_of_the_template_apply_after_line_breaks_become_sentence_ends():
    t = PromptTemplate(drop_xxxx=True, drop_prior_sentences=True)
    findings = "Heart XXXX normal\nStable compared to prior\nNo effusion"
    assert prompt.build(t, findings).user.endswith("Findings: Heart normal. No effusion")


SELECT = PromptTemplate(n_examples=2, show_similarity=True, select_from=4)
# the 4 nearest signed reports, most similar last (as the retriever returns them)
NEAR = [Example("a", "Right lower lobe pneumonia.", 0.52, "r4"),
        Example("b", "No acute cardiopulmonary abnormality.", 0.55, "r3"),
        Example("c", "Right lower lobe opacity, likely pneumonia.", 0.61, "r2"),
        Example("d", "Right lower lobe pneumonia. No effusion.", 0.70, "r1")]  # fmt: skip
OPACITY = "There is a right lower lobe opacity consistent with pneumonia. No pleural effusion."


def test_select_round_trips_shows_the_same_prompt_and_excludes_copynormal():
    assert SELECT.id == "paper-v1+examples2+sim+select4"
    assert PromptTemplate.from_id(SELECT.id) == SELECT
    plain = PromptTemplate(n_examples=2, show_similarity=True)
    p = prompt.build(SELECT, OPACITY, examples=NEAR[2:], candidates=NEAR)
    assert p.user == prompt.build(plain, OPACITY, examples=NEAR[2:]).user and p.candidates == tuple(NEAR)
    with pytest.raises(ValueError, match="one at most"):
        PromptTemplate.from_id("paper-v1+examples2+copynormal+select5")


def test_select_replaces_a_draft_that_misses_what_the_findings_assert():
    p = prompt.build(SELECT, OPACITY, examples=NEAR[2:], candidates=NEAR)
    text, source = prompt.settle(SELECT, p, "No acute disease.", OPACITY)
    assert source is not None and source.ref in {"r1", "r2", "r4"}  # a pneumonia impression, the others agree on
    assert "pneumonia" in text.lower()


def test_copied_signed_wording_is_tidied_like_the_models():
    loose = [Example("e", "Right lower lobe pneumonia. .", 0.99, "r9")] * 3
    p = prompt.build(SELECT, OPACITY, examples=loose[:2], candidates=loose)
    text, source = prompt.settle(SELECT, p, "No acute disease.", OPACITY)
    assert (text, source.ref) == ("Right lower lobe pneumonia.", "r9")


def test_select_keeps_a_draft_that_agrees_and_never_imports_a_wrong_side():
    p = prompt.build(SELECT, OPACITY, examples=NEAR[2:], candidates=NEAR)
    own = "Right lower lobe pneumonia."
    assert prompt.settle(SELECT, p, own, OPACITY) == (own, None)  # ties keep the draft
    wrong_side = [Example("e", "Left lower lobe pneumonia.", 0.99, "left")] * 3
    p = prompt.build(SELECT, OPACITY, examples=wrong_side[:2], candidates=wrong_side)
    assert prompt.settle(SELECT, p, "No acute disease.", OPACITY) == ("No acute disease.", None)
    # no candidates, or an empty draft: nothing to choose
    assert prompt.settle(SELECT, prompt.build(SELECT, OPACITY), "No acute disease.", OPACITY)[1] is None
    assert prompt.settle(SELECT, p, "", OPACITY) == ("", None)


def test_ship_may_serve_the_select_policy():
    from training.ship import serving_template

    trained = "paper-v1+examples2+exwords20+sim"
    assert serving_template(trained, trained + "+select5") == trained + "+select5"


def test_select_length_term_keeps_a_long_draft_against_short_boilerplate():
    # A long draft naming what the findings assert, and short signed wording that agrees among itself.
    findings = "Right lower lobe opacity consistent with pneumonia. Heart size normal."
    draft = "Right lower lobe airspace opacity consistent with pneumonia, recommend follow-up to resolution."
    near = [Example("a", "Right lower lobe pneumonia.", 0.9, f"r{i}") for i in range(4)]
    plain = PromptTemplate(n_examples=2, show_similarity=True, select_from=4)
    with_len = PromptTemplate.from_id("paper-v1+examples2+sim+select4+len10")
    assert with_len.select_length_tenths == 10 and with_len.id == "paper-v1+examples2+sim+select4+len10"
    assert with_len.without_policy == plain.without_policy == PromptTemplate(n_examples=2, show_similarity=True)
    p = prompt.build(plain, findings, examples=near[2:], candidates=near)
    assert prompt.settle(plain, p, draft, findings)[1] is not None  # without the term the boilerplate wins
    p = prompt.build(with_len, findings, examples=near[2:], candidates=near)
    assert prompt.settle(with_len, p, draft, findings) == (draft, None)  # with it, the draft stays
    with pytest.raises(ValueError, match="needs \\+select"):
        PromptTemplate.from_id("paper-v1+examples2+len3")
