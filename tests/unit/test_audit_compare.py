"""`radbridge audit-compare`: two audits of one history, paired bootstrap on the shared cases."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from typer.testing import CliRunner

from audit_messages import CASES, write_history
from radbridge.adapters.model.memory import InstantGenerator
from radbridge.audit.compare import compare
from radbridge.audit.run import Filters, audit
from radbridge.audit.sources import FileSource
from radbridge.audit.stats import bootstrap_interval, paired_bootstrap
from radbridge.cli import app
from radbridge.domain import Generation, ModelInfo
from radbridge.pipeline import Drafter, Mode

from test_audit import chest_scope


class Radiologist(InstantGenerator):
    """Writes the signed impression itself: a model B that is better than A on every case."""

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(backend="instant", base_model="perfect-reader", adapter="b")

    def generate(self, prompts, params):
        out = []
        for p in prompts:
            impression = next(imp for findings, imp in CASES if findings[:40] in p.user)
            out.append(Generation(impression, "eos_token"))
        return out


def audited(tmp_path: Path, generator, name: str, **filters) -> Path:
    drafter = Drafter(generator, mode=Mode.REPLAY, scope=chest_scope())
    audit(FileSource([tmp_path / "h"]), drafter, tmp_path / name, filters=Filters(**filters))
    return tmp_path / name


def test_paired_bootstrap_on_shared_cases_says_which_model_is_better(tmp_path):
    write_history(tmp_path / "h", n=16)
    a = audited(tmp_path, InstantGenerator(), "a")
    b = audited(tmp_path, Radiologist(), "b", limit=10)  # B audited only part of the history
    result = compare(a, b, resamples=500)
    assert result["shared"] == 10 and result["only_a"] == 6 and result["only_b"] == 0
    rl = result["figures"]["rougeL"]
    assert rl["b"] == 1.0 and rl["a"] < 0.2 and rl["diff"] == round(rl["a"] - rl["b"], 4)
    assert rl["ci95"][1] < 0  # A is worse, and the interval says so
    assert result["figures"]["flagged_share"]["b"] < result["figures"]["flagged_share"]["a"]
    assert result["changed_most"][0]["rougeL_change"] >= result["changed_most"][-1]["rougeL_change"]

    out = tmp_path / "cmp"
    cli = CliRunner().invoke(app, ["audit-compare", str(a), str(b), "--out", str(out), "--resamples", "300"])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout)["shared"] == 10
    with (out / "compare.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and {r["draft_b"] for r in rows} <= {imp for _, imp in CASES}
    html = (out / "compare.html").read_text()
    assert html.count("<tr>") >= 10 and "perfect-reader" in html and "http" not in html.split("<body>")[1]


def test_a_folder_that_is_not_an_audit_or_shares_no_case_is_refused(tmp_path):
    write_history(tmp_path / "h", n=4)
    a = audited(tmp_path, InstantGenerator(), "a", procedure=("71046",))  # the HL7 v2 reports
    b = audited(tmp_path, Radiologist(), "b", procedure=("36643-5",))  # the FHIR ones: no case in common
    (tmp_path / "empty").mkdir()
    for other, reason in ((tmp_path / "empty", "not an audit folder"), (b, "share no case")):
        cli = CliRunner().invoke(app, ["audit-compare", str(a), str(other), "--out", str(tmp_path / "cmp")])
        assert cli.exit_code == 1 and reason in cli.stdout
    assert not (tmp_path / "cmp").exists()


def test_bootstrap_intervals_are_seeded_and_contain_the_estimate():
    rows = [0.1, 0.5, 0.9, 0.3, 0.7] * 4
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    v, lo, hi = bootstrap_interval(rows, mean, n=400, seed=3)
    assert lo <= v <= hi and (v, lo, hi) == bootstrap_interval(rows, mean, n=400, seed=3)
    d, dlo, dhi = paired_bootstrap(rows, rows, mean, n=200)
    assert d == dlo == dhi == 0.0
