"""`radbridge serve-model` (TGI's protocol over the shipped adapter) and `radbridge check` against it, as commands."""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
MODEL = Path(__file__).resolve().parents[2] / "model"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    proc = subprocess.Popen(
        [str(BIN / "radbridge"), "serve-model", "--port", str(port), "--lora-adapters", f"radiology={MODEL}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"serve-model exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError("serve-model did not become healthy")
        time.sleep(0.5)
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
