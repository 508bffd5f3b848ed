"""The limits a site sets reach every reader: the pipeline (serve, draft) and the audit."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from radbridge.cli import app

CXR = Path(__file__).resolve().parents[1] / "fixtures" / "hl7v2" / "cxr_gdt_suffix_lf_v23.hl7"


def test_draft_applies_the_message_size_limit_from_settings(monkeypatch):
    ok = CliRunner().invoke(app, ["draft", "--backend", "instant", str(CXR)])
    assert json.loads(ok.stdout.splitlines()[0])["resourceType"] == "Bundle"
    monkeypatch.setenv("RADBRIDGE_MAX_MESSAGE_BYTES", "100")
    refused = CliRunner().invoke(app, ["draft", "--backend", "instant", str(CXR)])
    record = json.loads(refused.stdout.splitlines()[0])
    assert refused.exit_code == 1 and record["error"] == "limit_exceeded" and "max_message_bytes" in record["reason"]


def test_a_report_over_the_text_limit_is_refused_by_the_pipeline(monkeypatch):
    monkeypatch.setenv("RADBRIDGE_MAX_TEXT_CHARS", "40")
    out = CliRunner().invoke(app, ["draft", "--backend", "instant", str(CXR)])
    record = json.loads(out.stdout.splitlines()[0])
    assert record["status"] in ("error", "skipped") and "max_text_chars" in json.dumps(record)
