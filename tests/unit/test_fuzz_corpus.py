"""Replays tests/fixtures/fuzz/: crafted inputs that once broke a time, memory or error-type bound.

Each must read or raise a typed RadbridgeError in under 2 s and 256 MB (issue 12). Add every input that
breaks a bound here (crafted bytes only; never OpenI or other shared report text).
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

from radbridge.domain import Report
from radbridge.errors import RadbridgeError
from radbridge.limits import DEFAULT_LIMITS
from radbridge.reading import read_payload

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "fuzz"
FILES = sorted(p for p in CORPUS.iterdir() if p.suffix in (".hl7", ".json"))


@pytest.fixture(scope="module", autouse=True)
def warm():
    # the first read loads hl7apy's segment tables (about a second under tracemalloc): not the input's cost
    read_payload((CORPUS / "sp_escape_bomb.hl7").read_bytes())


def test_the_corpus_is_there():
    assert len(FILES) >= 9


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_corpus_input_reads_or_raises_typed_error_within_bounds(path):
    data = path.read_bytes()
    tracemalloc.start()
    start = time.perf_counter()
    try:
        _, items = read_payload(data, location=path.name)
        outcome = "read"
    except RadbridgeError as exc:
        items, outcome = [], exc.kind
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 2.0, f"{elapsed:.2f} s"
    assert peak < 256 * 1024 * 1024, f"{peak / 2**20:.0f} MB"
    assert outcome in ("read", "malformed", "limit_exceeded", "unsupported")
    for item in items:
        if isinstance(item, Report):  # what a bomb leaves behind is bounded too
            assert len(item.findings) <= DEFAULT_LIMITS.max_text_chars
