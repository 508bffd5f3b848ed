"""Metrics and baselines of radbridge.evaluation on reports written for these tests."""

import json

import pytest

from radbridge.domain import Generation, ModelInfo
from radbridge.evaluation import (
    CONSTANT_IMPRESSION,
    PipelineDrafter,
    clinical_counts,
    clinical_f1,
    constant_drafter,
    evaluate,
    laterality_disagreements,
    read_records,
    retrieval_drafter,
    rouge,
    run,
    score,
    summary_line,
)
from radbridge.retrieval import Retriever
from radbridge.settings import Settings
from radbridge.textclean import CleanRules, clean_text, keep_report

TRAIN = [
    {"uid": 1, "findings": "The heart is normal in size. The lungs are clear. No pleural effusion or pneumothorax.",
     "impression": "No acute cardiopulmonary abnormality."},
    {"uid": 2, "findings": "There is a large right pleural effusion with adjacent atelectasis. Heart size normal.",
     "impression": "Large right pleural effusion."},
    {"uid": 3, "findings": "The heart is enlarged. Pulmonary vascular congestion and interstitial edema are present.",
     "impression": "Cardiomegaly with mild pulmonary edema."},
]
VALID = [
    {"uid": 10, "findings": "Large right pleural effusion and atelectasis of the right base. Heart size is normal.",
     "impression": "Large right pleural effusion."},
    {"uid": 11, "findings": "Heart is normal in size. Lungs are clear. No pneumothorax or pleural effusion seen.",
     "impression": "No acute disease."},
]


def test_rouge_identical_is_one_and_disjoint_is_zero():
    assert rouge(["Large right effusion."], ["Large right effusion."]) == pytest.approx(
        {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    )
    assert rouge(["Cardiomegaly."], ["Pneumothorax."])["rouge1"] == 0.0


def test_rouge_uses_stemming():
    # "effusions" vs "effusion" only match after stemming
    assert rouge(["Bilateral effusions."], ["Bilateral effusion."])["rouge1"] == pytest.approx(1.0)


def test_clinical_f1_micro_over_positive_abnormal_mentions():
    drafts = ["Large right pleural effusion.", "No acute disease.", "Cardiomegaly. Possible pneumonia."]
    refs = ["Right pleural effusion and cardiomegaly.", "Pneumothorax.", "Cardiomegaly."]
    c = clinical_counts(drafts, refs)
    assert (c.tp, c.fp, c.fn) == (2, 0, 2)  # uncertain pneumonia is not a positive mention
    assert clinical_f1(drafts, refs) == pytest.approx(2 * 2 / (2 * 2 + 0 + 2))
    assert clinical_f1([CONSTANT_IMPRESSION], ["Small left effusion."]) == 0.0


def test_negated_mentions_are_not_credited():
    assert clinical_counts(["No pneumothorax."], ["Pneumothorax."]).tp == 0


def test_laterality_disagreement_against_findings():
    findings = "Small right pleural effusion. No pneumothorax."
    assert laterality_disagreements("Small left pleural effusion.", findings) == ["Pleural Effusion"]
    assert laterality_disagreements("Small right pleural effusion.", findings) == []
    assert laterality_disagreements("Bilateral pleural effusions.", findings) == ["Pleural Effusion"]
    # nothing to contradict when the findings give no side
    assert laterality_disagreements("Left effusion.", "Small pleural effusion.") == []


def test_score_keys_and_lengths():
    s = score(["Large right pleural effusion.", "Normal."], [v["impression"] for v in VALID],
              [v["findings"] for v in VALID])
    for key in ("rouge1", "rouge2", "rougeL", "clinical_f1", "laterality_errors", "n", "mean_draft_words",
                "mean_reference_words"):
        assert key in s
    assert s["n"] == 2
    assert s["mean_draft_words"] == pytest.approx(2.5)
    assert s["mean_reference_words"] == pytest.approx(3.5)


def test_by_reference_splits_figures_by_abnormal_reference():
    refs = ["Large right pleural effusion and cardiomegaly.", "No acute disease.", "No acute cardiopulmonary abnormality."]
    drafts = ["No acute disease.", "No acute disease.", "Small left pneumothorax."]
    g = score(drafts, refs, ["x"] * 3)["by_reference"]
    assert g["abnormal"]["n"] == 1 and g["normal"]["n"] == 2
    assert g["abnormal"]["mean_reference_words"] == pytest.approx(6)
    assert g["abnormal"]["mean_draft_words"] == pytest.approx(3)
    assert g["normal"]["mean_draft_words"] == pytest.approx(3)  # (3 + 3) / 2
    assert g["abnormal"]["drafts_abnormal"] == 0  # it said normal where the radiologist did not
    assert g["normal"]["drafts_abnormal"] == 1  # a false alarm
    assert g["normal"]["rougeL"] == pytest.approx(0.5)  # identical, then disjoint
    assert g["abnormal"]["rougeL"] == 0.0


def test_retrieval_baseline_returns_nearest_training_impression():
    r = Retriever(TRAIN)
    assert r.nearest_impressions([v["findings"] for v in VALID]) == [
        "Large right pleural effusion.",
        "No acute cardiopulmonary abnormality.",
    ]
    result = evaluate(VALID, retrieval_drafter(r))
    assert result["rouge1"] > evaluate(VALID, constant_drafter())["rouge1"]
    assert [d["uid"] for d in result["drafts"]] == [10, 11]


def test_retrieval_examples_exclude_self_and_put_best_last():
    r = Retriever(TRAIN)
    exs = r.examples([TRAIN[1]["findings"]], 2, exclude=[1])[0]
    assert all(e.impression != TRAIN[1]["impression"] for e in exs)
    best = r.examples([TRAIN[1]["findings"]], 2)[0]
    assert best[-1].impression == TRAIN[1]["impression"]
    assert r.examples_for(TRAIN[2]["findings"], 1)[0].impression == TRAIN[2]["impression"]


def test_cleaning_rules():
    assert not keep_report({"findings": "Too short.", "impression": "Normal chest."})
    assert not keep_report({"findings": " ".join(["word"] * 12), "impression": "Normal."})
    assert keep_report({"findings": " ".join(["word"] * 12), "impression": "Normal chest."})
    text = "1. Small effusion, unchanged from prior. 2. XXXX scarring in the left apex."
    assert clean_text(text, CleanRules(drop_xxxx=True)) == "1. Small effusion, unchanged from prior. 2. scarring in the left apex."
    assert clean_text(text, CleanRules(drop_prior_sentences=True)) == "2. XXXX scarring in the left apex."
    assert clean_text(text, CleanRules()) == text


def test_run_writes_results_json_and_is_deterministic(tmp_path):
    data, train = tmp_path / "valid.jsonl", tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(v) + "\n" for v in VALID))
    train.write_text("".join(json.dumps(t) + "\n" for t in TRAIN))
    a = run(Settings(), data, tmp_path / "a.json", baseline="retrieval", train=train)
    b = run(Settings(), data, tmp_path / "b.json", baseline="retrieval", train=train)
    saved = json.loads((tmp_path / "a.json").read_text())
    assert saved["rougeL"] == a["rougeL"] == b["rougeL"]
    assert saved["drafts"][0]["draft"] == "Large right pleural effusion."
    assert run(Settings(), data, tmp_path / "c.json", baseline="constant", limit=1)["n"] == 1
    assert len(read_records(data, limit=1)) == 1


def test_example_findings_are_cut_by_the_template_everywhere():
    from radbridge.prompt import Example, PromptTemplate, build

    t = PromptTemplate(n_examples=1, example_findings_words=3)
    assert PromptTemplate.from_id(t.id) == t
    ex = Retriever(TRAIN).examples_for(TRAIN[0]["findings"], 1)
    assert ex == [Example(TRAIN[0]["findings"], TRAIN[0]["impression"], 1.0, "1")]  # retrieval returns them whole
    user = build(t, "Findings here.", examples=ex).user
    assert "Findings: The heart is\nImpression: No acute cardiopulmonary abnormality." in user


def test_examples_carry_their_similarity_and_the_sim_template_shows_it():
    from radbridge.prompt import PromptTemplate, build

    r = Retriever(TRAIN)
    [hits] = r.search_scored([TRAIN[1]["findings"]], 3)
    assert hits[0] == (1, pytest.approx(1.0)) and hits[0][1] >= hits[1][1] >= hits[2][1] >= 0.0
    exs = r.examples([TRAIN[1]["findings"]], 2, exclude=[1])[0]
    assert all(0.0 <= e.similarity < 1.0 for e in exs) and exs[0].similarity <= exs[1].similarity
    by_uid = {str(t["uid"]): t for t in TRAIN}
    assert all(by_uid[e.ref]["impression"] == e.impression for e in exs)  # each names the report it came from
    t = PromptTemplate.from_id("paper-v1+examples2+exwords20+sim")
    assert t.show_similarity and t.id == "paper-v1+examples2+exwords20+sim"
    user = build(t, "Findings here.", examples=exs).user
    assert f"Example 2 (similarity {exs[1].similarity:.2f}):\nFindings: " in user
    plain = build(PromptTemplate.from_id("paper-v1+examples2+exwords20"), "Findings here.", examples=exs).user
    assert "similarity" not in plain and "Example 2:\nFindings: " in plain


def test_paired_bootstrap_separates_a_real_difference_from_none():
    from training.compare import _mean, paired_bootstrap

    same = [0.2, 0.9, 0.5, 0.7] * 10
    assert paired_bootstrap(same, same, _mean, n=200) == (0.0, 0.0, 0.0)
    better = [x + 0.1 for x in same]
    diff, lo, hi = paired_bootstrap(better, same, _mean, n=200)
    assert diff == pytest.approx(0.1) and lo == pytest.approx(0.1) and hi == pytest.approx(0.1)
    noisy = [0.0, 1.0] * 20  # A wins half the reports by 1, loses the other half by 1
    diff, lo, hi = paired_bootstrap(noisy, noisy[::-1], _mean, n=500)
    assert diff == 0.0 and lo < 0 < hi


def test_compare_rescoring_two_results_files(tmp_path):
    from training.compare import compare

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"uid": i, "findings": "f", "impression": imp}) + "\n"
                            for i, imp in enumerate(["Small left pleural effusion.", "No acute disease."] * 5)))  # fmt: skip
    good = [{"uid": i, "draft": d} for i, d in enumerate(["Small left pleural effusion.", "No acute disease."] * 5)]
    bad = [{"uid": i, "draft": "No acute disease."} for i in range(10)]
    (tmp_path / "a.json").write_text(json.dumps({"drafts": good}))
    (tmp_path / "b.json").write_text(json.dumps({"drafts": bad}))
    out = compare(str(tmp_path / "a.json"), str(tmp_path / "b.json"), str(data), n=200)
    assert out["n"] == 10
    assert out["rougeL"]["a"] == pytest.approx(1.0) and out["rougeL"]["diff"] > 0 and out["rougeL"]["ci95"][0] > 0
    assert out["clinical_f1"]["a"] == 1.0 and out["clinical_f1"]["b"] == 0.0


class Writes:
    """A generator answering normal for every report but the one with atelectasis."""

    info = ModelInfo(backend="test", base_model="test")

    def generate(self, prompts, params):
        return [Generation("Lungs are clear." if "atelectasis" not in p.user.split("Findings: ")[-1]
                           else "Right pleural effusion.") for p in prompts]


def _through_pipeline(template_id: str, generator=None, **kw) -> PipelineDrafter:
    from radbridge.pipeline import Drafter
    from radbridge.prompt import PromptTemplate

    drafter = Drafter(generator or Writes(), template=PromptTemplate.from_id(template_id), examples=Retriever(TRAIN))
    return PipelineDrafter(drafter, progress=False, **kw)


def test_wording_policy_keeps_and_scores_what_the_model_wrote():
    records = [VALID[1], VALID[0]]
    result = evaluate(records, _through_pipeline("paper-v1+examples1+copynormal"))
    # The normal study took the nearest signed report's wording; the abnormal one kept the model's text.
    assert [d["draft"] for d in result["drafts"]] == ["No acute cardiopulmonary abnormality.", "Right pleural effusion."]
    assert result["drafts"][0]["model_draft"] == "Lungs are clear." and "model_draft" not in result["drafts"][1]
    assert result["wording_copied"] == 1
    alone = evaluate(records, _through_pipeline("paper-v1+examples1"))
    assert "model_only" not in alone
    assert result["model_only"]["rougeL"] == alone["rougeL"] and result["model_only"]["mean_draft_words"] == 3.0
    assert result["clinical_f1"] == result["model_only"]["clinical_f1"]


def test_eval_drafts_in_batches_through_the_pipeline_and_cleans_once():
    seen: list[int] = []

    class Labels(Writes):
        def generate(self, prompts, params):
            seen.append(len(prompts))
            return [Generation("Impression: No acute disease.<|im_end|>junk") for _ in prompts]

    drafts = _through_pipeline("paper-v1", Labels(), batch_size=2)(VALID + VALID[:1])
    assert seen == [2, 1]
    assert drafts == ["No acute disease."] * 3  # label and stop marker removed by the core


def test_eval_cli_reads_settings_once_with_options_as_overrides(tmp_path, monkeypatch):
    import radbridge.evaluation as evaluation
    from typer.testing import CliRunner

    from radbridge.cli import app

    got = {}
    monkeypatch.setattr(evaluation, "run", lambda settings, *a, **kw: got.setdefault("s", settings) and {})
    monkeypatch.setattr(evaluation, "summary_line", lambda result: "ok")
    data = tmp_path / "v.jsonl"
    data.write_text(json.dumps(VALID[0]) + "\n")
    monkeypatch.setenv("RADBRIDGE_MAX_NEW_TOKENS", "77")
    args = ["eval", "--data", str(data), "--out", str(tmp_path / "o.json")]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert got.pop("s").max_new_tokens == 77  # the service's setting, not an eval-only default
    assert CliRunner().invoke(app, args + ["--max-new-tokens", "12", "--adapter", "none", "--template",
                                           "paper-v1+fwords60"]).exit_code == 0
    s = got["s"]
    assert (s.max_new_tokens, s.no_adapter, s.adapter, s.prompt_template) == (12, True, None, "paper-v1+fwords60")


def test_eval_reports_the_checker_flags_and_their_agreement_with_the_reference():
    records = [
        {"uid": "a", "findings": "Large left pleural effusion.", "impression": "Left pleural effusion."},
        {"uid": "b", "findings": "Small right pneumothorax. Heart normal.", "impression": "Small right pneumothorax."},
        {"uid": "c", "findings": "Lungs are clear.", "impression": "No acute disease."},
    ]
    drafts = {"a": "Right pleural effusion.", "b": "No acute cardiopulmonary abnormality.", "c": "Cardiomegaly."}
    result = evaluate(records, lambda rs: [drafts[r["uid"]] for r in rs])
    checker = result["checker"]
    assert checker["laterality"] == {"errors": 1, "flagged": 1, "recall": 1.0}
    assert checker["omission"]["reference_misses"] == 1 and checker["omission"]["flagged"] == 1  # the pneumothorax
    assert checker["unsupported"]["flags"] == 1 and checker["unsupported"]["precision"] == 1.0  # the cardiomegaly
    assert [row["flags"][0]["kind"] for row in result["drafts"]] == ["laterality", "omission", "unsupported"]
    assert "checker:" in summary_line(result)


def test_a_flag_on_a_related_observation_counts_only_in_related_recall():
    records = [{"uid": "a", "findings": "Patchy opacity at the left base.", "impression": "Left basilar atelectasis."}]
    checker = evaluate(records, lambda rs: ["No acute disease."])["checker"]["omission"]
    assert (checker["reference_misses"], checker["flagged"], checker["flagged_related"]) == (1, 0, 1)


def test_consensus_baseline_picks_the_neighbour_the_others_agree_with():
    train = [
        {"uid": 1, "findings": "right lower lobe opacity with air bronchograms near the heart border",
         "impression": "Right lower lobe pneumonia."},
        {"uid": 2, "findings": "right lower lobe opacity the heart size is normal",
         "impression": "No acute cardiopulmonary abnormality."},
        {"uid": 3, "findings": "lower lobe opacity heart normal lungs otherwise clear",
         "impression": "No acute cardiopulmonary abnormality seen."},
        {"uid": 4, "findings": "opacity lungs clear heart normal size mediastinum",
         "impression": "No acute cardiopulmonary disease."},
    ]
    r = Retriever(train)
    query = ["right lower lobe opacity with air bronchograms near the heart border"]
    assert r.nearest_impressions(query) == ["Right lower lobe pneumonia."]  # the nearest says pneumonia
    (chosen,) = r.consensus_impressions(query, k=4)
    assert chosen.startswith("No acute cardiopulmonary")  # the neighbours agree on the normal wording
    assert r.consensus_impressions(query, k=1) == r.nearest_impressions(query)  # alone, it is the nearest
