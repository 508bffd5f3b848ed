"""training.goals: the confirmation step of the selection protocol, on reports written for this test."""

import json

import pytest

from training.goals import check, main

RECORDS = [
    {"uid": f"u{i}", "findings": f"There is a small left pleural effusion. Case {i}.", "impression": "Small left pleural effusion."}
    for i in range(20)
] + [
    {"uid": f"n{i}", "findings": f"The lungs are clear. Heart size normal. Case {i}.", "impression": "No acute cardiopulmonary abnormality."}
    for i in range(20)
]


def test_a_candidate_that_says_what_the_radiologist_said_meets_every_goal():
    good = {r["uid"]: r["impression"] for r in RECORDS}
    nearest = {r["uid"]: "No acute cardiopulmonary abnormality." for r in RECORDS}  # misses every effusion
    result = check(good, nearest, RECORDS, resamples=200)
    g = result["goals"]
    assert result["pass"] and result["n"] == 40
    assert g["rougeL"]["diff"] > 0.4 and g["rougeL"]["ci95"][0] > 0
    assert g["clinical_f1"]["candidate"] == 1.0
    assert 0.99 < g["length_ratio"]["candidate"] < 1.01


def test_each_goal_fails_on_its_own():
    refs = {r["uid"]: r["impression"] for r in RECORDS}
    wrong_side = {u: t.replace("left", "right") for u, t in refs.items()}  # a laterality error per effusion
    result = check(wrong_side, refs, RECORDS, resamples=200)
    assert not result["goals"]["laterality_errors"]["pass"] and not result["goals"]["rougeL"]["pass"]
    terse = {u: "Effusion." if u.startswith("u") else "Normal." for u in refs}
    assert not check(terse, refs, RECORDS, resamples=200)["goals"]["length_ratio"]["pass"]  # far too short


def test_the_command_restricts_both_files_to_the_part_and_can_score_the_model_alone(tmp_path, capsys):
    data = tmp_path / "part.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    extra = {"uid": "other-part", "draft": "x"}
    cand = [{"uid": r["uid"], "draft": r["impression"], "model_draft": "No acute disease."} for r in RECORDS]
    base = [{"uid": r["uid"], "draft": "No acute cardiopulmonary abnormality."} for r in RECORDS]
    (tmp_path / "c.json").write_text(json.dumps({"drafts": cand + [extra]}))
    (tmp_path / "b.json").write_text(json.dumps({"drafts": base + [extra]}))
    assert main([str(tmp_path / "c.json"), str(tmp_path / "b.json"), "--data", str(data), "--resamples", "200"]) == 0
    assert "ALL GOALS MET on 40 reports" in capsys.readouterr().out
    # before the wording policy the same candidate says "No acute disease." everywhere: it fails
    assert main([str(tmp_path / "c.json"), str(tmp_path / "b.json"), "--data", str(data), "--model-only",
                 "--resamples", "200", "--json", str(tmp_path / "g.json")]) == 1
    assert json.loads((tmp_path / "g.json").read_text())["model_only"] is True


def test_length_policies_complete_a_normal_draft_and_weigh_length():
    from radbridge.prompt import Example
    from training.length_policies import complete, select_with_length

    findings = "Heart size normal. There is a small left pleural effusion. No pneumothorax."
    normal = "No acute cardiopulmonary abnormality."
    # the omitted effusion's own sentence is appended; "replace" drops a draft that called the study normal
    assert complete(normal, findings, severe_only=True, at_most=3, replace=False) == (
        "No acute cardiopulmonary abnormality. There is a small left pleural effusion.")
    assert complete(normal, findings, severe_only=True, at_most=3, replace=True) == "There is a small left pleural effusion."
    said = "Small left pleural effusion."
    assert complete(said, findings, severe_only=False, at_most=3, replace=False) == said  # nothing omitted
    # among equally agreeing candidates a length term picks the one nearest the expected length
    pool = [Example("x", "Small left effusion.", 0.9), Example("x", "Small left pleural effusion, no other abnormality seen today.", 0.9)]
    assert select_with_length("Left effusion.", pool, findings, 5, 0.0, 10) != pool[1].impression
    assert select_with_length("Left effusion.", pool, findings, 5, 5.0, 10) == pool[1].impression


def test_length_policies_refuse_the_confirm_part(tmp_path):
    import pytest

    from training.length_policies import main as policies_main

    with pytest.raises(SystemExit, match="tune part only"):
        policies_main([str(tmp_path / "r.json"), "--data", str(tmp_path / "valid-confirm.jsonl"), "--train", "t.jsonl"])


def test_length_policies_compare_each_policy_with_a_baseline(tmp_path, capsys):
    from training.length_policies import main as policies_main

    data, train = tmp_path / "valid-tune.jsonl", tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    signed = [dict(r, uid=f"t-{r['uid']}", findings=r["findings"] + " No pneumothorax or consolidation is seen.")
              for r in RECORDS]  # retrieval keeps reports of 10 findings words or more
    train.write_text("".join(json.dumps(r) + "\n" for r in signed))
    good = [{"uid": r["uid"], "draft": r["impression"], "model_draft": r["impression"]} for r in RECORDS]
    base = [{"uid": r["uid"], "draft": "No acute cardiopulmonary abnormality."} for r in RECORDS]
    (tmp_path / "c.json").write_text(json.dumps({"drafts": good}))
    (tmp_path / "b.json").write_text(json.dumps({"drafts": base}))
    policies_main([str(tmp_path / "c.json"), "--data", str(data), "--train", str(train), "--baseline", str(tmp_path / "b.json"),
                   "--resamples", "50"])
    out = capsys.readouterr().out.splitlines()
    assert "R-L vs baseline" in out[0]
    alone = next(line for line in out if line.startswith("model alone"))
    # the radiologists' own words against a baseline that misses every effusion: half the reports gain ~0.7 R-L
    diff, low = (float(x) for x in alone.split("  ")[-1].replace("[", "").replace(",", "").split()[:2])
    assert diff > 0.3 and low > 0
    assert any(line.startswith("select5 len1.0 draft") for line in out)


def test_sampled_select_takes_the_draft_the_samples_agree_on_and_reuses_kept_samples(tmp_path, capsys):
    from training.sampled_select import choose, main as sampled_main

    findings = "There is a small left pleural effusion."
    # two samples agree on the effusion; the odd one out (which also ignores the findings) is not chosen
    texts = ["No acute disease.", "Small left pleural effusion.", "Small left effusion."]
    assert choose(texts, [1.0, 1.0, 1.0], findings) == "Small left pleural effusion."
    data, train = tmp_path / "valid-tune.jsonl", tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    signed = [dict(r, uid=f"t-{r['uid']}", findings=r["findings"] + " No pneumothorax or consolidation is seen.")
              for r in RECORDS]
    train.write_text("".join(json.dumps(r) + "\n" for r in signed))
    greedy = [{"uid": r["uid"], "draft": "No acute disease.", "model_draft": "No acute disease."} for r in RECORDS]
    (tmp_path / "g.json").write_text(json.dumps({"drafts": greedy}))
    args = [str(tmp_path / "g.json"), "--adapter", "a", "--template", "t", "--data", str(data), "--train", str(train),
            "--samples", str(tmp_path / "s.json"), "-n", "2"]
    setup = {"adapter": "a", "template": "t", "data": str(data), "n": 2, "temperature": 0.7, "top_p": None}
    kept = [{"uid": r["uid"], "samples": [r["impression"], r["impression"]]} for r in RECORDS]  # no model is loaded
    (tmp_path / "s.json").write_text(json.dumps({"setup": setup, "drafts": kept}))
    sampled_main(args)
    rows = {line[:48].strip(): line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert float(rows["MBR greedy + 2 samples"][-6]) > float(rows["model alone (greedy)"][-6]) + 0.3  # R-L: the samples win
    with pytest.raises(SystemExit, match="tune part only"):
        sampled_main([*args[:6], str(tmp_path / "valid-confirm.jsonl"), *args[7:]])


def test_device_drafts_are_scored_uncut_and_cut_against_retrieval_and_each_other(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "training" / "gpu" / "score_drafts.py"
    spec = importlib.util.spec_from_file_location("score_drafts", path)
    score_drafts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(score_drafts)

    data = tmp_path / "tune.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    baseline = tmp_path / "retrieval.json"
    baseline.write_text(json.dumps({"drafts": [{"uid": r["uid"], "draft": "No acute cardiopulmonary abnormality."}
                                               for r in RECORDS]}))
    drafts = tmp_path / "drafts.json"
    drafts.write_text(json.dumps({"config": "c.json", "sets": [], "uids": [r["uid"] for r in RECORDS],
                                  "uncut": [r["impression"] for r in RECORDS],  # says what the radiologist said
                                  "cut": ["No acute cardiopulmonary abnormality."] * len(RECORDS)}))
    score_drafts.main([str(drafts), "--baseline", str(baseline), "--data", str(data)])
    out = capsys.readouterr().out
    uncut, cut = out.split(" cut (model alone")
    assert "ALL GOALS MET" in uncut and "GOALS NOT MET" in cut
    rouge = next(line for line in out.splitlines() if line.startswith("uncut - cut rougeL"))
    low = float(rouge.split("[")[1].split(",")[0])
    assert low > 0  # the uncut drafts are better, and the interval says so


def test_compare_drafts_counts_identical_served_and_model_drafts_and_refuses_other_reports(tmp_path, capsys):
    from training.compare_drafts import main as compare_main

    scores = {"rougeL": 0.5, "clinical_f1": 0.4, "laterality_errors": 1, "mean_draft_words": 6.0}
    a = {"meta": {"system": "local"}, **scores, "model_only": scores,
         "drafts": [{"uid": 1, "draft": "No acute disease.", "model_draft": "Clear lungs."},
                    {"uid": 2, "draft": "Small left effusion."}, {"uid": 3, "draft": "Cardiomegaly."}]}
    b = {"meta": {"system": "tgi"}, **scores,
         "drafts": [{"uid": 1, "draft": "No acute disease.", "model_draft": "Lungs are clear."},
                    {"uid": 2, "draft": "Small left effusion."}, {"uid": 3, "draft": "Mild cardiomegaly."}]}
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    assert compare_main([str(pa), str(pb)]) == 0
    out = capsys.readouterr().out
    assert "served drafts identical: 2 of 3" in out and "model drafts identical:  1 of 3" in out
    assert "A model alone" in out and "B model alone" not in out
    assert "Cardiomegaly" not in out  # counts and scores only, never draft text
    b["drafts"] = b["drafts"][:2]
    pb.write_text(json.dumps(b))
    assert compare_main([str(pa), str(pb)]) == 1
