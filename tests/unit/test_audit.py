"""`radbridge audit` over files: counts, outputs written as cases finish, resume, refusal, filters, exit status."""

from __future__ import annotations

import csv
from datetime import datetime, timezone
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from audit_messages import CASES, write_history
from radbridge.adapters.model.memory import InstantGenerator
from radbridge.audit.run import Filters, NothingAudited, audit
from radbridge.audit.sources import FileSource
from radbridge.audit.writer import AuditRefused
from radbridge.cli import app
from radbridge.errors import RetryableError
from radbridge.pipeline import Drafter, Mode
from radbridge.prompt import PromptTemplate
from radbridge.scope import Scope

MANIFEST = Path(__file__).resolve().parents[2] / "model" / "manifest.json"


def chest_scope() -> Scope:
    return Scope.from_manifest(json.loads(MANIFEST.read_text())["scope"])


class Counting(InstantGenerator):
    """Counts prompts; fails with a retryable error (the model server went away) on call ``fail_on``."""

    def __init__(self, fail_on: int | None = None):
        super().__init__()
        self.prompts = 0
        self.fail_on = fail_on

    def generate(self, prompts, params):
        if self.fail_on is not None and self.calls + 1 == self.fail_on:
            self.calls += 1
            raise RetryableError("model server unavailable")
        self.prompts += len(prompts)
        return super().generate(prompts, params)


def drafter(generator=None, **kw) -> Drafter:
    return Drafter(generator or Counting(), mode=Mode.REPLAY, scope=chest_scope(), **kw)


def cli(*args, **env):
    env = {"RADBRIDGE_MANIFEST_FILE": str(MANIFEST), **env}
    return CliRunner().invoke(app, ["audit", "--backend", "instant", *map(str, args)], env=env)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_audit_writes_one_case_per_signed_in_scope_report_and_lists_every_skip(tmp_path):
    expected = write_history(tmp_path / "history", n=12)
    result = cli(tmp_path / "history", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    cases = jsonl(out / "cases.jsonl")
    assert len(cases) == expected["audited"] == len({c["key"] for c in cases})
    with (out / "cases.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["key"] for r in rows] == [c["key"] for c in cases]
    assert {"accession", "signed_impression", "draft", "rougeL", "flags"} <= set(rows[0])
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and run["counts"]["audited"] == 12
    assert run["counts"]["skipped_by_reason"] == expected["skipped_by_reason"]
    assert run["identity"]["backend"] == "instant" and run["identity"]["template"]
    assert len(run["source"]["digest"]) == 64 and run["source"]["files"] == 16
    skipped = {s["reason"]: s for s in jsonl(out / "skipped.jsonl")}
    assert skipped["out_of_scope"]["source"].endswith("x_ct_head.hl7") and "CT" in skipped["out_of_scope"]["detail"]
    assert skipped["unreadable"]["source"].endswith("x_malformed.hl7")
    # the signed impression is the radiologist's, from HL7 (impression OBX) and FHIR (conclusion) alike
    by_acc = {c["accession"]: c for c in cases}
    assert by_acc["ACC00001"]["signed_impression"] == "Small right pleural effusion."
    assert by_acc["ACC00001"]["missed"] == ["Pleural Effusion"]  # the canned draft says nothing of it
    assert {f["kind"] for f in by_acc["ACC00001"]["flags"]} == {"omission"}
    assert by_acc["FACC00002"]["format"] == "fhir" and by_acc["FACC00002"]["signed_impression"]
    assert all(0.0 <= c["rougeL"] <= 1.0 and c["modality"] and c["date"] for c in cases)
    # no patient identifier anywhere in what an audit writes
    for name in ("cases.jsonl", "cases.csv", "run.json", "skipped.jsonl", "report.html"):
        text = (out / name).read_text()
        assert "PAT0000" not in text and "Audit1" not in text and "pat-2" not in text, name


def test_an_interrupted_audit_resumes_without_redrafting_finished_cases(tmp_path):
    write_history(tmp_path / "h", n=10)
    src, out = FileSource([tmp_path / "h"]), tmp_path / "out"
    failing = Counting(fail_on=3)  # batches of 3: two finish, the third meets a dead model server
    with pytest.raises(RetryableError):
        audit(src, drafter(failing), out, batch_size=3)
    first = jsonl(out / "cases.jsonl")
    assert len(first) == 6 and failing.prompts == 6
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    with (out / "cases.jsonl").open("a") as f:
        f.write('{"key": "torn')  # a crash in the middle of a write
    again = Counting()
    run = audit(src, drafter(again), out, batch_size=3)
    assert again.prompts == 4  # only the four never finished
    assert run["counts"]["resumed_cases"] == 6 and run["counts"]["drafted_this_run"] == 4
    cases = jsonl(out / "cases.jsonl")
    assert len(cases) == 10 == len({c["key"] for c in cases}) and cases[:6] == first
    assert len((out / "cases.csv").read_text().splitlines()) == 11
    assert run["counts"]["skipped"] == 4  # each skip listed once across both runs
    assert run["runs"] == 2 and run["status"] == "complete"
    third = Counting()
    assert audit(src, drafter(third), out)["counts"]["resumed_cases"] == 10 and third.prompts == 0


def test_another_template_in_the_same_folder_is_refused(tmp_path):
    write_history(tmp_path / "h", n=3)
    out = tmp_path / "out"
    audit(FileSource([tmp_path / "h"]), drafter(), out)
    other = drafter(template=PromptTemplate.from_id("paper-v1+fwords60"))
    with pytest.raises(AuditRefused, match="template.*use a new --out folder"):
        audit(FileSource([tmp_path / "h"]), other, out)
    result = cli(tmp_path / "h", "--out", out, "--template", "paper-v1+fwords60")
    assert result.exit_code == 2 and "use a new --out folder" in result.output
    assert len(jsonl(out / "cases.jsonl")) == 3  # untouched


def test_nothing_audited_exits_nonzero_with_the_reason(tmp_path):
    write_history(tmp_path / "h", n=0)
    result = cli(tmp_path / "h", "--out", tmp_path / "out")
    assert result.exit_code == 1
    reason = json.loads(result.stdout.strip().splitlines()[-1])["reason"]
    assert "no report audited" in reason and "out_of_scope" in reason and "not_signed" in reason
    with pytest.raises(NothingAudited):
        audit(FileSource([tmp_path / "h"]), drafter(), tmp_path / "out2")


def test_filters_limit_and_seeded_sample(tmp_path):
    write_history(tmp_path / "h", n=12)
    src = FileSource([tmp_path / "h"])
    run = audit(src, drafter(), tmp_path / "lim", filters=Filters(limit=5))
    assert run["counts"]["audited"] == 5 and run["counts"]["not_selected"] == 7
    # FHIR reports carry the RAD section, the HL7 ones DX
    run = audit(src, drafter(), tmp_path / "mod", filters=Filters(modality=("rad",)))
    assert run["counts"]["audited"] == 4 and run["counts"]["filtered_out"] > 0
    picks = []
    for name, seed in (("s1", 1), ("s1b", 1), ("s2", 2)):
        audit(src, drafter(), tmp_path / name, filters=Filters(sample=4, seed=seed))
        picks.append([c["key"] for c in jsonl(tmp_path / name / "cases.jsonl")])
    assert len(picks[0]) == 4 and picks[0] == picks[1] and picks[0] != picks[2]
    assert audit(src, drafter(), tmp_path / "proc", filters=Filters(procedure=("36643-5",)))["counts"]["audited"] == 4


def test_a_reader_bug_lists_the_message_and_the_audit_goes_on(tmp_path, monkeypatch):
    write_history(tmp_path / "h", n=3)
    import radbridge.reading as reading

    real = reading.read_message

    def flaky(data, fmt=None, **kw):
        if b"AUD-1|" in data:
            raise IndexError("reader bug")
        return real(data, fmt, **kw)

    monkeypatch.setattr(reading, "read_message", flaky)
    run = audit(FileSource([tmp_path / "h"]), drafter(), tmp_path / "out")
    assert run["counts"]["audited"] == 2 and run["counts"]["skipped_by_reason"]["unreadable"] == 2


def test_a_fhir_server_that_fails_mid_paging_stops_the_run_resumably(tmp_path):
    import httpx

    from audit_messages import cxr_fhir
    from radbridge.adapters.fhir_server.store import HttpFhirStore
    from radbridge.audit.sources import FhirServerSource, SourceUnavailable

    base = "http://fhir.test/r4"
    pages = {1: [json.loads(cxr_fhir(i, *CASES[i])) for i in range(2)], 2: [json.loads(cxr_fhir(i, *CASES[i])) for i in (2, 3)]}
    down = {"page2": True}
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        page = int(request.url.params.get("page", "1"))
        if page == 2 and down["page2"]:
            return httpx.Response(503)
        body = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in pages[page]],
                "link": [{"relation": "next", "url": f"{base}/DiagnosticReport?page=2"}] if page == 1 else []}
        return httpx.Response(200, json=body)

    def source():
        store = HttpFhirStore(base, transport=httpx.MockTransport(handler), max_pages=100)
        return FhirServerSource(store, base)

    with pytest.raises(SourceUnavailable, match="HTTP 503"):
        audit(source(), drafter(), tmp_path / "out")
    assert json.loads((tmp_path / "out" / "run.json").read_text())["status"] == "interrupted"
    down["page2"] = False
    run = audit(source(), drafter(), tmp_path / "out")
    assert run["counts"]["audited"] == 4 and run["status"] == "complete"
    assert set(seen) == {"GET"}  # searched, never written to


def test_bundles_are_written_as_replays_with_ids_that_name_the_model(tmp_path):
    from dataclasses import replace

    from radbridge.adapters.model.memory import InstantGenerator
    from radbridge.domain import Draft, GenerationParams, ModelInfo, Report, SourceRef
    from radbridge.formats.fhir.writer import build_bundle, draft_key

    write_history(tmp_path / "h", n=4)
    result = cli(tmp_path / "h", "--out", tmp_path / "a", "--bundles")
    assert result.exit_code == 0, result.stdout
    cases = [json.loads(line) for line in (tmp_path / "a" / "cases.jsonl").read_text().splitlines()]
    files = sorted((tmp_path / "a" / "bundles").glob("*.json"))
    assert len(files) == len(cases) > 0
    bundle = json.loads(files[0].read_bytes())
    (prov,) = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Provenance"]
    assert "audit replay" in prov["reason"][0]["text"]
    # two models on the same report: two distinct drafts, where a live draft's ids come from the source alone
    report = Report(source=SourceRef(format="hl7v2", sha256="a" * 64), status="final", findings="x")
    one = Draft(report, "Normal.", "paper-v1", InstantGenerator().info, GenerationParams())
    two = replace(one, model=ModelInfo(backend="tgi", base_model="other"))
    assert draft_key(one, replay=True) != draft_key(two, replay=True) and draft_key(one) == draft_key(two)
    urls = lambda d: {e["fullUrl"] for e in build_bundle(d, recorded=datetime.now(timezone.utc), replay=True)["entry"]}
    assert urls(one).isdisjoint(urls(two))
