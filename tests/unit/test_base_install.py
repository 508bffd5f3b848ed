"""The base install (`pip install radbridge`, no [local] extra): the CLI and a model-server drafter work without torch,
and the in-process model is refused in one line that says what to install."""

from __future__ import annotations

import importlib
import os
import sys

import pytest

EXTRA = ("torch", "transformers", "peft", "gguf", "safetensors")


class _NotInstalled:
    """A meta-path finder that makes the [local] packages look absent: their import (or find_spec) fails."""

    def __init__(self):
        self.tried: list[str] = []

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in EXTRA:
            self.tried.append(name)
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None


@pytest.fixture
def base_install(monkeypatch: pytest.MonkeyPatch):
    """radbridge imported afresh with the [local] packages absent; sys.modules restored afterwards."""
    saved = dict(sys.modules)
    for name in list(sys.modules):
        if name.split(".")[0] in ("radbridge", *EXTRA):
            del sys.modules[name]
    blocker = _NotInstalled()
    sys.meta_path.insert(0, blocker)
    try:
        yield blocker
    finally:
        sys.meta_path.remove(blocker)
        sys.modules.clear()
        sys.modules.update(saved)


def test_cli_and_model_server_drafters_import_no_torch(base_install, monkeypatch):
    for name in list(os.environ):
        if name.startswith("RADBRIDGE_"):
            monkeypatch.delenv(name)
    importlib.import_module("radbridge.cli")
    for module in ("radbridge.service.runner", "radbridge.service.http", "radbridge.adapters.model.server"):
        importlib.import_module(module)
    bootstrap = importlib.import_module("radbridge.bootstrap")
    Settings = importlib.import_module("radbridge.settings").Settings

    for backend in ("tgi", "openai"):
        settings = Settings(backend=backend, model_url="http://127.0.0.1:9", adapter="radiology")
        drafter = bootstrap.build_drafter(settings)
        assert drafter.generator.info.backend == backend
    assert not [m for m in sys.modules if m.split(".")[0] in EXTRA]


def test_local_backend_without_the_extra_is_one_line(base_install, monkeypatch):
    for name in list(os.environ):
        if name.startswith("RADBRIDGE_"):
            monkeypatch.delenv(name)
    cli = importlib.import_module("radbridge.cli")
    bootstrap = importlib.import_module("radbridge.bootstrap")
    Settings = importlib.import_module("radbridge.settings").Settings

    with pytest.raises(Exception) as caught:
        bootstrap.build_generator(Settings(backend="local"))
    line = cli.fail_line(caught.value)
    assert line is not None and "\n" not in line
    assert "install radbridge[local]" in line and "torch" in line

    from typer.testing import CliRunner

    result = CliRunner().invoke(cli.app, ["serve-model", "--port", "9"])
    assert result.exit_code != 0
    line = cli.fail_line(result.exception)
    assert line is not None and "install radbridge[local]" in line
    assert base_install.tried  # the check looked for the packages, and found them missing
