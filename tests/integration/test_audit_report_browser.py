"""report.html as an auditor sees it: opened in headless Chromium, its table, plots and script really render."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from audit_messages import write_history  # noqa: E402

from radbridge.cli import app  # noqa: E402

pytestmark = pytest.mark.integration
MANIFEST = Path(__file__).resolve().parents[2] / "model" / "manifest.json"


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium; installed once when missing. Skipped, with the reason, only if it cannot be."""
    found = shutil.which("chromium")
    if found is None and shutil.which("apt-get"):
        done = subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, text=True, timeout=900)
        found = shutil.which("chromium")
        if found is None:
            pytest.skip(f"chromium is not installed and `apt-get install -y chromium` failed: {done.stderr[-300:]}")
    if found is None:
        pytest.skip("chromium is not installed and there is no apt-get to install it")
    return found


def headless(browser: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def audited(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("audit")
    write_history(base / "history", n=12)
    payload = '<img src=x onerror="document.title=1">'  # report text is data, never markup
    (base / "history" / "cxr_html.hl7").write_bytes(
        (base / "history" / "cxr_000.hl7").read_bytes().replace(b"No acute cardiopulmonary process.",
                                                                 f"No acute process {payload}.".encode()))
    result = CliRunner().invoke(app, ["audit", "--backend", "instant", str(base / "history"), "--out", str(base / "out")],
                                env={"RADBRIDGE_MANIFEST_FILE": str(MANIFEST)})
    assert result.exit_code == 0, result.output
    return base / "out"


def rows_shown(dom: str) -> list[str]:
    body = dom.split('<table id="cases">', 1)[1].split("</table>", 1)[0]
    return [tr for tr in re.findall(r"<tr[^>]*>", body) if "data-flags" in tr and "hidden" not in tr]


def test_report_renders_table_plots_and_script_in_chromium(chromium, audited):
    report = audited / "report.html"
    html = report.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)  # nothing fetched: a workstation is offline
    assert "<link" not in html and "@import" not in html
    assert '<img src=x' not in html and "&lt;img src=x" in html
    cases = [json.loads(line) for line in (audited / "cases.jsonl").read_text().splitlines()]
    assert len(cases) == 13

    done = headless(chromium, "--virtual-time-budget=3000", "--dump-dom", report.as_uri())
    dom = done.stdout
    assert done.returncode == 0 and "</html>" in dom, done.stderr[-500:]
    assert len(rows_shown(dom)) == 13
    assert re.search(r'<span id="shown">13</span>', dom)  # the script ran (the count is filled in by it)
    assert len(re.findall(r"<svg ", dom)) == 4
    assert len(re.findall(r'<rect class="bar"', dom)) == 14  # 10 ROUGE-L bins + 4 flag kinds
    assert len(re.findall(r'<circle class="dot"', dom)) == 13
    assert "<del>" in dom and "<ins>" in dom
    assert "<title>radbridge audit</title>" in dom  # the escaped payload never ran (it would set the title)

    omission = sum(1 for c in cases if any(f["kind"] == "omission" for f in c["flags"]))
    assert 0 < omission < 13
    filtered = headless(chromium, "--virtual-time-budget=3000", "--dump-dom", report.as_uri() + "#flag=omission").stdout
    assert len(rows_shown(filtered)) == omission
    assert re.search(rf'<span id="shown">{omission}</span>', filtered)

    shot = audited / "report.png"
    done = headless(chromium, "--window-size=1400,1600", f"--screenshot={shot}", report.as_uri())
    assert done.returncode == 0 and shot.stat().st_size > 50_000, done.stderr[-500:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
