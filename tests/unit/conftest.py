"""The unit tier's boundary, checked rather than trusted: no model stack, no child process.

A unit test runs on in-memory adapters. One that needs torch, a broker, a model server or a FHIR server belongs
in tests/integration, where the tests start those parts themselves; here it fails the run instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent
# The model stack: importing it alone takes ~8 s on 2 cores, and loading the model far longer.
MODEL_STACK = ("torch", "transformers", "peft")


@pytest.fixture(autouse=True)
def _no_child_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every process a test could start (broker, model server, sekmet, the CLI) goes through these two calls."""

    def refuse(*args, **kwargs):
        raise AssertionError("a unit test started a process; tests that need one belong in tests/integration")

    # Patched on the class, so a module that did `from subprocess import Popen` is covered too.
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr(os, "fork", refuse)


def _unit_run_only(config: pytest.Config) -> bool:
    # In a run that also collects tests/integration, those modules import torch: the check would be meaningless.
    base = config.invocation_params.dir
    return all(Path(base, arg.split("::")[0]).resolve().is_relative_to(UNIT) for arg in config.args)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run of the unit tier alone fails if anything it collected or ran imported the model stack."""
    if not _unit_run_only(session.config):
        return
    loaded = [name for name in MODEL_STACK if name in sys.modules]
    if not loaded:
        return
    message = (
        f"unit tier imported {', '.join(loaded)}: a unit test (or code it reaches) loads the model stack; "
        "use an in-memory generator, or move the test to tests/integration"
    )
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write("\n")  # the progress line has no newline yet
        reporter.write_sep("=", "unit tier boundary broken", red=True)
        reporter.write_line(message, red=True)
    else:
        print(message, file=sys.stderr)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
