"""Property-based fuzzing of the readers (hypothesis), seeded from real messages.

Every input either reads (reports and skips), or raises a typed error (a RadbridgeError; attachments may also
say UnreadableAttachment), within a time bound. Seeds: the project's fixtures, ../shared/fixtures-ref and
OpenI report text (skipped when absent; never copied into git). The default run is derandomized and small
(``RADBRIDGE_FUZZ_EXAMPLES``, default 150 per property, about 10 s in all here); ``make fuzz`` runs 10,000,
randomized. Any input that ever broke a bound goes to tests/fixtures/fuzz/, replayed by test_fuzz_corpus.py.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from radbridge import samples
from radbridge.domain import Report, Skipped
from radbridge.errors import RadbridgeError
from radbridge.formats.attachments import UnreadableAttachment, html_to_text, read_attachment
from radbridge.formats.hl7v2.er7 import unescape
from radbridge.limits import Limits
from radbridge.reading import read_payload
from radbridge.sections import HEADINGS, split_sections

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "fixtures-ref"
BOUND_S = 2.0
EXAMPLES = int(os.environ.get("RADBRIDGE_FUZZ_EXAMPLES", "150"))
RANDOM = os.environ.get("RADBRIDGE_FUZZ_RANDOM") == "1"  # make fuzz: a new search each run

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # timed below with a bound meant for a busy machine; hypothesis' deadline would flake
    derandomize=not RANDOM,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def _files(*folders: Path, suffix: str) -> list[bytes]:
    return [p.read_bytes() for folder in folders if folder.is_dir() for p in sorted(folder.glob(f"*{suffix}"))]


HL7_SEEDS = _files(ROOT / "tests/fixtures/hl7v2", SHARED / "hl7v2", suffix=".hl7")
FHIR_SEEDS = _files(ROOT / "tests/fixtures/fhir", SHARED / "fhir", suffix=".json")


def _json_object(data: bytes) -> bool:
    try:
        return isinstance(json.loads(data), dict)
    except ValueError:
        return False


FHIR_DOCS = [d for d in FHIR_SEEDS if _json_object(d)]  # structure-level edits need a parseable seed
OPENI = samples.openi_reports()[:200]
TEXT_SEEDS = [r.get("findings") or "" for r in OPENI] or ["Heart size normal. Lungs are clear."]

# Pieces a hostile or broken sender would use.
HL7_TOKENS = [b"|", b"^", b"~", b"\\", b"&", b"\r", b"\n", b"\r\n", b"\x0b", b"\x1c\r", b"\xef\xbb\xbf",
              b"\\.sp999999999\\", b"\\.sp\\", b"\\.in-99\\", b"\\.ti9\\", b"\\.sk99\\", b"\\X00FF\\", b"\\XZZ\\",
              b"\\C2842\\", b"\\E\\", b"\\H\\", b"\\.br\\", b"MSH|^~\\&|", b"OBR|1|", b"OBX|1|TX|", b"OBX|1|ED|",
              b"^TEXT^HTML^Base64^", b"^AP^PDF^Base64^", b"PDF", b"\xff\xfe", b"\xc3\x28", b"FINDINGS:",
              b"IMPRESSION:", b"<!--", b"<title ", b"2.5.1", b"UNICODE UTF-8", b"8859/1", b"\x00"]  # fmt: skip
FHIR_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=40) | st.sampled_from(["DiagnosticReport", "Bundle", "Observation", "#o1", "final",
                                              "preliminary", "text/html", "application/pdf", "RAD", "18748-4"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


def readable_or_typed(data: bytes, limits: Limits | None = None) -> None:
    """The property: the payload reads, or it raises a RadbridgeError; either way within the bound."""
    start = time.perf_counter()
    try:
        _, items = read_payload(data, location="fuzz", **({"limits": limits} if limits else {}))
    except RadbridgeError:
        items = []
    elapsed = time.perf_counter() - start
    assert elapsed < BOUND_S, f"{elapsed:.2f} s for {len(data)} bytes"
    assert all(isinstance(i, (Report, Skipped)) for i in items)
    for item in items:
        if isinstance(item, Report):
            assert item.findings and item.findings.strip()


@st.composite
def mutated(draw, seeds: list[bytes], tokens: list[bytes]) -> bytes:
    """A seed message with a few byte-level edits: inserts of hostile tokens, deletions, repeats, cuts."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["insert", "delete", "repeat", "flip", "truncate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "insert":
            data[at:at] = draw(st.sampled_from(tokens)) * draw(st.sampled_from([1, 1, 2, 50, 2000]))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif op == "repeat":
            piece = bytes(data[at : at + draw(st.integers(1, 80))])
            data[at:at] = piece * draw(st.integers(1, 300))
        elif op == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[at:]
    return bytes(data)


@given(mutated(HL7_SEEDS, HL7_TOKENS))
@FUZZ
def test_hl7_messages_read_or_raise_typed_errors(data):
    readable_or_typed(data)


@given(st.binary(max_size=2000).map(lambda b: b"MSH|^~\\&|" + b))
@FUZZ
def test_hl7_random_bytes_after_an_msh(data):
    readable_or_typed(data)


@given(st.lists(st.sampled_from(HL7_TOKENS) | st.binary(max_size=8), max_size=60).map(b"".join))
@FUZZ
def test_hl7_escapes_and_delimiters_unescape_quickly(parts):
    text = parts.decode("latin-1")
    start = time.perf_counter()
    out = unescape(text * 50)
    assert time.perf_counter() - start < BOUND_S
    assert len(out) <= 50 * len(text) * 101  # at most 100 line breaks per escape


@given(st.sampled_from(TEXT_SEEDS), st.sampled_from(["hl7v2", "fhir"]), st.integers(0, 200), st.booleans())
@FUZZ
def test_openi_text_in_both_formats(findings, fmt, cut, with_impression):
    if not OPENI:
        pytest.skip("OpenI data is not in ../shared/data/openi")
    row = {"uid": 1, "findings": findings[: len(findings) - cut] if cut else findings, "impression": "Normal."}
    data = samples.to_hl7v2(row, with_impression=with_impression) if fmt == "hl7v2" else samples.to_fhir(row)
    readable_or_typed(data)


@given(mutated(FHIR_SEEDS, [b"{", b"}", b"[", b"]", b'"', b",", b":", b"\\u0000", b"null", b"1e999", b"\xff"]))
@FUZZ
def test_fhir_bytes_read_or_raise_typed_errors(data):
    readable_or_typed(data)


@st.composite
def fhir_documents(draw) -> bytes:
    """A seed resource with some values replaced, removed or repeated at random JSON paths."""
    doc = json.loads(draw(st.sampled_from(FHIR_DOCS)))
    for _ in range(draw(st.integers(1, 5))):
        node, key = doc, None
        for _depth in range(draw(st.integers(0, 6))):  # walk down to a random container
            keys = list(node) if isinstance(node, dict) else list(range(len(node))) if isinstance(node, list) else []
            if not keys:
                break
            key = draw(st.sampled_from(keys))
            if not isinstance(node[key], (dict, list)) or draw(st.booleans()):
                break
            node, key = node[key], None
        if key is None or not isinstance(node, (dict, list)):
            continue
        op = draw(st.sampled_from(["replace", "delete", "repeat"]))
        if op == "replace":
            node[key] = draw(FHIR_VALUES)
        elif op == "delete" and isinstance(node, dict):
            del node[key]
        elif op == "repeat" and isinstance(node[key], list):
            node[key] = node[key] * draw(st.sampled_from([2, 10, 300]))
    return json.dumps(doc).encode()


@given(fhir_documents())
@FUZZ
def test_fhir_documents_read_or_raise_typed_errors(data):
    readable_or_typed(data)


@given(fhir_documents())
@FUZZ
def test_fhir_documents_under_tight_limits(data):
    readable_or_typed(data, Limits(max_entries=20, max_reports=3, max_text_chars=2000, max_attachment_bytes=4000))


MEDIA_TYPES = ["", "text/plain", "text/html", "application/xhtml+xml", "text/rtf", "application/pdf",
               "text/html; charset=utf-16", "text/plain; charset=klingon", "image/png"]  # fmt: skip
HTML_TOKENS = ["<", ">", "<!--", "-->", "<title ", "</title>", "<script>", "</script >", "<head>", "<p>", "<br/>",
               "<td>", "&amp;", "&#", "&#x", "9999999", ";", "<!doctype html>", "<?xml ?>", "</", "<a href='>'>",
               "{\\rtf1", "\\par", "{", "}", "\\'e9", "\\u8364?", "%PDF-1.4", "Lungs clear. "]  # fmt: skip


@given(st.lists(st.sampled_from(HTML_TOKENS) | st.text(max_size=6), max_size=80), st.sampled_from(MEDIA_TYPES),
       st.sampled_from([1, 1, 500]))  # fmt: skip
@FUZZ
def test_attachments_read_or_say_unreadable(parts, media_type, repeat):
    raw = ("".join(parts) * repeat).encode("utf-8", "surrogatepass")
    start = time.perf_counter()
    try:
        kind, text = read_attachment(raw, media_type)
        assert isinstance(text, str) and kind
    except (UnreadableAttachment, RadbridgeError):
        pass
    assert time.perf_counter() - start < BOUND_S


@given(st.binary(max_size=3000).map(lambda b: b"%PDF-1.4\n" + b))
@FUZZ
def test_pdf_bytes_read_or_say_unreadable(raw):
    start = time.perf_counter()
    try:
        read_attachment(raw, "application/pdf")
    except (UnreadableAttachment, RadbridgeError):
        pass
    assert time.perf_counter() - start < BOUND_S


HEADING_WORDS = sorted({s for spellings in HEADINGS.values() for s in spellings})
SECTION_TOKENS = st.sampled_from(HEADING_WORDS) | st.sampled_from(
    [":", " ", "\t", "\n", "\r\n", ".", ";", "-", "/", "FINDINGS", "IMPRESSION:", "Impression:", "x", "Lungs clear"]
)


@given(st.lists(SECTION_TOKENS, max_size=120), st.sampled_from([1, 1, 200]), st.sampled_from(TEXT_SEEDS))
@FUZZ
def test_sections_are_found_quickly_and_invent_nothing(tokens, repeat, seed):
    text = "".join(tokens) * repeat + seed
    start = time.perf_counter()
    s = split_sections(text)
    assert time.perf_counter() - start < BOUND_S
    for name in ("findings", "impression", "indication", "comparison", "technique", "recommendation", "preamble"):
        value = getattr(s, name)
        assert value is None or all(word in text for word in value.split())
    assert set(s.headings) <= set(HEADINGS)


@given(st.text(alphabet=st.characters(blacklist_characters="<&"), max_size=400))
@FUZZ
def test_html_text_keeps_the_words_of_plain_text(text):
    assert html_to_text(f"<div>{text}</div>").split() == text.split()
