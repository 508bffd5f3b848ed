"""The safety layer end to end through the real CLI and the ``openai`` backend.

A small stand-in for an OpenAI-compatible server (vLLM, SGLang, TGI's Messages API) answers chat completions with
deliberately wrong drafts: the wrong side for an effusion, "normal" over a pneumothorax, and a faithful draft for a
clear chest. ``radbridge draft`` runs as its own process against it; the DetectedIssues in its output must implicate
the wrong drafts and the faithful one must carry none. A CT and a knee MRI must be skipped as out of scope.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _hl7(control_id: str, findings: str, proc: str = "71046^XR CHEST 2 VIEWS^C4") -> bytes:
    return (
        f"MSH|^~\\&|RIS|H|EHR|H|20240101120000||ORU^R01^ORU_R01|{control_id}|P|2.5.1\r"
        f"PID|1||P-{control_id}^^^H^MR||Doe^Pat\r"
        f"OBR|1||ACC-{control_id}^RIS|{proc}|||20240101110000||||||||||||||||RAD|P\r"
        f"OBX|1|TX|59776-5^Procedure findings^LN||{findings}||||||P\r"
    ).encode()


CASES = {
    "wrong-side": ("Large left pleural effusion. No pneumothorax.", "Right pleural effusion."),
    "omission": ("Large right pneumothorax with mediastinal shift.", "No acute cardiopulmonary abnormality."),
    "faithful": ("Heart size normal. Lungs clear. No effusion or pneumothorax.", "No acute cardiopulmonary abnormality."),
}


class _Stub(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def _json(self, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._json({"object": "list", "data": [{"id": "stub-model", "object": "model"}]})

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["content-length"])))
        user = request["messages"][-1]["content"]
        # the report's own findings are the last "Findings:" line of the prompt (examples come before it)
        findings = user.rsplit("Findings:", 1)[-1]
        answer = next(draft for f, draft in CASES.values() if f.split(".")[0] in findings)
        self._json({
            "id": "x", "object": "chat.completion", "created": 0, "model": request.get("model", "stub"),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        })


@pytest.fixture()
def stub_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_wrong_drafts_carry_detected_issues_and_out_of_scope_exams_are_skipped(stub_server, tmp_path):
    paths = []
    for name, (findings, _) in CASES.items():
        paths.append(tmp_path / f"{name}.hl7")
        paths[-1].write_bytes(_hl7(name.upper(), findings))
    ct = tmp_path / "ct.hl7"
    ct.write_bytes(_hl7("CT1", "Small left pleural effusion.", "71250^CT CHEST WITH CONTRAST^C4"))
    paths.append(ct)
    paths.append(ROOT / "tests" / "fixtures" / "hl7v2" / "mri_knee_fnd_imp_mllp_bom_v24.hl7")

    env = {**os.environ, "RADBRIDGE_PROMPT_TEMPLATE": "paper-v1", "RADBRIDGE_MODEL_URL": stub_server}
    run = subprocess.run(
        [str(Path(sys.executable).with_name("radbridge")), "draft", "--backend", "openai", "--mode", "replay", *map(str, paths)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(lines) == 5

    def issues(bundle: dict) -> list[tuple[str, str, str]]:
        (dr,) = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]
        out = []
        for e in bundle["entry"]:
            r = e["resource"]
            if r["resourceType"] == "DetectedIssue":
                assert r["implicated"] == [{"reference": dr["fullUrl"]}]
                out.append((r["code"]["coding"][0]["code"], r["severity"], r["detail"]))
        return out

    wrong_side, omission, faithful, ct_line, mri_line = lines
    assert [(k, s) for k, s, _ in issues(wrong_side)] == [("laterality", "high")]
    assert [(k, s) for k, s, _ in issues(omission)] == [("omission", "high")]
    assert "pneumothorax" in issues(omission)[0][2]
    assert issues(faithful) == []
    for skipped in (ct_line, mri_line):
        assert skipped["status"] == "skipped" and skipped["skipped"][0]["reason"] == "out_of_scope"
