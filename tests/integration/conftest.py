"""Fixtures for integration tests: real servers, started by the tests and stopped after them, and the real model,
read once per run."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from server_helpers import wait_until_serving

from radbridge.adapters.kafka.broker import free_port

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
        wait_until_serving(f"{base_url}/metadata", process, SEKMET_STARTUP_S, "sekmet", log_path.read_text)
        yield FhirServer(base_url=base_url, log_path=log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


class GgufReads:
    """The run's first read of each GGUF file (model or tokenizer); every later load gets a deep copy of it.

    Dequantising SmolLM2 and building its tokenizer take 10-40 s a load on 2 shared cores; a copy takes
    under 1 s and gives the same weights (a load is deterministic), so code that loads the model itself
    (training, evaluation) still runs its whole path, on an object no other test has touched.
    """

    def __init__(self) -> None:
        self.first: dict[tuple, object] = {}

    def patch(self, mp: pytest.MonkeyPatch) -> None:
        import transformers

        for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
            mp.setattr(cls, "from_pretrained", self._cached(cls.__name__, cls.from_pretrained))

    def _cached(self, name: str, load):
        def from_pretrained(*args, **kwargs):
            if "gguf_file" not in kwargs:
                return load(*args, **kwargs)
            key = (name, tuple(map(str, args)), tuple(sorted((k, str(v)) for k, v in kwargs.items())))
            if key not in self.first:
                self.first[key] = load(*args, **kwargs)
            return copy.deepcopy(self.first[key])

        return from_pretrained


@pytest.fixture(scope="session")
def gguf_reads() -> GgufReads:
    return GgufReads()


@pytest.fixture
def read_gguf_once(monkeypatch: pytest.MonkeyPatch, gguf_reads: GgufReads) -> None:
    """For tests whose code loads the base model itself, as often as it likes (see GgufReads)."""
    gguf_reads.patch(monkeypatch)


@pytest.fixture(scope="session")
def radiology_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random q_proj/v_proj LoRA in a folder named ``radiology`` (the adapter name the tests ask for)."""
    from lora_helpers import write_random_lora  # imports torch: only runs that use the model pay for it

    return write_random_lora(tmp_path_factory.mktemp("lora") / "radiology")


@pytest.fixture(scope="session")
def radiology_model(radiology_adapter: Path, gguf_reads: GgufReads):
    """The real SmolLM2 with the ``radiology`` adapter, loaded once per run for every in-process test.

    Sharing is safe: each ``generate`` sets its rows' adapters itself, and a model server built on it only
    reads it. One torch thread, as most tests here pinned it: 2 ran ~6x slower on a busy 2-core machine
    (see LocalModel).
    """
    from radbridge.adapters.model.local import LocalModel

    model = LocalModel({"radiology": radiology_adapter}, batch_size=4, threads=1)
    with pytest.MonkeyPatch.context() as mp:
        gguf_reads.patch(mp)  # PEFT wraps a copy: the base model stays pristine for the tests after
        return model.load()


@pytest.fixture(scope="module")
def broker():
    """A fresh embedded Kafka-protocol broker (Tansu) per test module."""
    from radbridge.adapters.kafka.broker import EmbeddedBroker

    with EmbeddedBroker() as b:
        yield b
