"""The README's main command runs end to end on the embedded default (here with the instant generator)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_on_the_embedded_broker_and_exits_cleanly():
    radbridge = Path(sys.executable).with_name("radbridge")
    proc = subprocess.run(
        [str(radbridge), "demo", "--backend", "instant", "--openi", "4"],
        capture_output=True, text=True, timeout=600, env={"PATH": "/usr/bin:/bin", "COLUMNS": "160"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r"done: (\d+) drafted, (\d+) skipped .*?, (\d+) dead-lettered", proc.stdout, re.S)
    assert m, proc.stdout[-2000:]
    drafted, skipped, rejected = map(int, m.groups())
    assert drafted >= 4 + 5  # the OpenI reports plus the project's own radiology fixtures
    assert skipped >= 3 and rejected >= 3  # lab/ADT/signed fixtures skipped; malformed fixtures dead-lettered
    assert "draft impression (preliminary)" in proc.stdout
