"""`radbridge serve-model` (TGI's protocol over the shipped adapter) and `radbridge check` against it, as commands."""

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from server_helpers import wait_until_serving

from radbridge.adapters.kafka.broker import free_port

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
MODEL = Path(__file__).resolve().parents[2] / "model"


@pytest.fixture(scope="module")
def server():
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "radbridge"), "serve-model", "--port", str(port), "--lora-adapters", f"radiology={MODEL}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(f"{url}/health", proc, 300, "serve-model", proc.stderr.read)
    yield url
    proc.terminate()
    proc.wait(30)


def check(url: str, adapter: str) -> tuple[int, dict]:
    out = subprocess.run(
        [str(BIN / "radbridge"), "check", "--backend", "tgi", "--url", url, "--adapter", adapter],
        capture_output=True, text=True, timeout=300,
    )
    return out.returncode, json.loads(out.stdout.strip().splitlines()[-1])


def test_check_accepts_the_loaded_adapter(server):
    code, result = check(server, "radiology")
    assert code == 0 and result["ok"] is True and result["adapter"] == "radiology"


def test_check_refuses_an_adapter_the_server_silently_ignores(server):
    code, result = check(server, "radiology-v2-not-loaded")
    assert code == 1 and result["error"] == "adapter_mismatch"


def test_info_names_the_model(server):
    info = httpx.get(f"{server}/info", timeout=10).json()
    assert "SmolLM2" in info["model_id"] and info["max_total_tokens"] > 0


def test_eval_scores_a_model_server_like_the_local_model(server, tmp_path):
    from radbridge import samples

    rows = [r for r in samples.openi_reports("valid") if r.get("findings") and r.get("impression")][:4]
    data = tmp_path / "valid4.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    template = json.loads((MODEL / "manifest.json").read_text())["prompt_template"]
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [str(BIN / "radbridge"), "eval", "--data", str(data), "--backend", "tgi", "--url", server,
         "--adapter", "radiology", "--template", template, "--max-new-tokens", "24", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
        # A batch of 4 long prompts can take longer than the 60 s default on 2 busy cores (seen once beside a
        # training run): the test is about the wiring, not the latency.
        env={**os.environ, "RADBRIDGE_REQUEST_TIMEOUT_S": "300"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["n"] == 4 and 0.0 <= result["rougeL"] <= 1.0
    assert all(r["draft"].strip() for r in result["drafts"])
