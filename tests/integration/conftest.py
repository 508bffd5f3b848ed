"""Fixtures that start real servers for integration tests: each is started by the tests and stopped after them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from radbridge.adapters.broker import free_port

SEKMET_STARTUP_S = 60.0  # measured ~3-8 s; generous because the two CPU cores are shared


@dataclass(frozen=True)
class FhirServer:
    base_url: str
    log_path: Path


def _sekmet_command() -> list[str]:
    script = Path(sys.executable).with_name("sekmet")
    if not script.exists():
        raise RuntimeError("sekmet-fhir is not installed in this environment (pip install sekmet-fhir==0.1.1)")
    return [str(script)]


@pytest.fixture(scope="session")
def sekmet_fhir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirServer]:
    """A sekmet-fhir R4 server on 127.0.0.1 (strict inbound validation, simulator off, SQLite in a temp dir)."""
    workdir = tmp_path_factory.mktemp("sekmet")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/fhir"
    config = workdir / "settings.yaml"
    # JSON is valid YAML: no YAML writer needed.
    config.write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "port": port,
                "base_url": base_url,
                "data_dir": str(workdir / "data"),
                "own_private_key_path": str(workdir / "keys" / "sekmet_private.pem"),
                "simulator": {"enabled": False},
                "validation": {"inbound": "strict"},
                "log_inbound": False,
            }
        )
    )
    log_path = workdir / "sekmet.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*_sekmet_command(), "serve", "--config", str(config)],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        _wait_ready(base_url, process, log_path)
        yield FhirServer(base_url=base_url, log_path=log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_ready(base_url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + SEKMET_STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sekmet exited with {process.returncode}:\n{log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base_url}/metadata", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"sekmet not ready after {SEKMET_STARTUP_S} s:\n{log_path.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def broker():
    """A fresh embedded Kafka-protocol broker (Tansu) per test module."""
    from radbridge.adapters.broker import EmbeddedBroker

    with EmbeddedBroker() as b:
        yield b
