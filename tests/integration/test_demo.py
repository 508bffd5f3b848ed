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
    # the service must reach the same verdict per message as the pipeline does in-process on the same samples
    from radbridge.adapters.model.memory import InstantGenerator
    from radbridge.demo import demo_samples
    from radbridge.pipeline import Drafter, Envelope

    outcomes = Drafter(InstantGenerator()).process([Envelope(s.data) for s in demo_samples(4)])
    expected = [sum(o.status == k for o in outcomes) for k in ("drafted", "skipped", "rejected")]
    assert [drafted, skipped, rejected] == expected
    assert drafted >= 4 + 5 and skipped >= 3 and rejected >= 3
    assert "draft impression (preliminary)" in proc.stdout and "checks against the findings" in proc.stdout
