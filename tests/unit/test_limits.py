"""Limits and linear parsing: each parser-bomb probe of issue 12 is bounded, in time and in what it yields.

Time bounds are generous for a busy 2-core machine; before the fixes each of these ran for tens of seconds,
minutes, or never finished.
"""

from __future__ import annotations

import base64
import json
import time
import zlib
from contextlib import contextmanager

import pytest

from radbridge.adapters.model.memory import InstantGenerator
from radbridge.errors import LimitExceeded, PermanentError
from radbridge.formats.attachments import html_to_text, read_attachment
from radbridge.formats.fhir.reader import read_fhir
from radbridge.formats.framing import BOM
from radbridge.formats.hl7v2.er7 import MAX_ESCAPE_REPEAT, unescape
from radbridge.formats.hl7v2.reader import read_hl7v2
from radbridge.limits import DEFAULT_LIMITS, Limits
from radbridge.pipeline import Drafter, Envelope
from radbridge.reading import read_message, read_payload, split_payload
from radbridge.sections import split_sections
from radbridge.settings import Settings

BOUND_S = 2.0


@contextmanager
def within(seconds: float = BOUND_S):
    start = time.perf_counter()
    yield
    elapsed = time.perf_counter() - start
    assert elapsed < seconds, f"took {elapsed:.2f} s (bound {seconds} s)"


def oru(*obx: str, groups: int = 1) -> bytes:
    obr = "OBR|{n}||F{n}^RIS|71046^XR CHEST 2 VIEWS^C4|||20240101101010|||||||||||||||||RAD|P"
    segs = ["MSH|^~\\&|RIS|H|EHR|H|20240101121212||ORU^R01|T-1|P|2.5.1", "PID|1||M1^^^H^MR"]
    for n in range(1, groups + 1):
        segs += [obr.format(n=n), *obx]
    return "\r".join(segs).encode()


def finding(text: str, vtype: str = "TX") -> str:
    return f"OBX|1|{vtype}|59776-5^Procedure Findings^LN||{text}||||||P"


def dr(**extra) -> dict:
    return {
        "resourceType": "DiagnosticReport",
        "status": "preliminary",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "18748-4"}], "text": "XR CHEST"},
        **extra,
    }


def bundle(*resources: dict) -> bytes:
    return json.dumps({"resourceType": "Bundle", "type": "collection",
                       "entry": [{"resource": r} for r in resources]}).encode()  # fmt: skip


def pdf(pages: int, body: bytes, *, compress: bool = False) -> bytes:
    """A PDF of ``pages`` pages that all share one content stream ``body``."""
    stream = zlib.compress(body, 9) if compress else body
    kids = " ".join(f"{5 + i} 0 R" for i in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Length {len(stream)}{' /Filter /FlateDecode' if compress else ''} >>\nstream\n".encode()
        + stream + b"\nendstream",
    ]
    objects += [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
                b"/Contents 4 0 R >>"] * pages  # fmt: skip
    out = b"%PDF-1.4\n"
    offsets = []
    for n, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{off:010d} 00000 n \n".encode() for off in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def text_stream(line: str, repeat: int) -> bytes:
    return ("BT /F1 11 Tf 72 720 Td 14 TL " + f"({line}) ' " * repeat + "ET").encode()


# -- the limits themselves --------------------------------------------------------------------------------


def test_limits_come_from_settings_with_safe_defaults(monkeypatch):
    assert Limits.from_settings(Settings()) == DEFAULT_LIMITS
    monkeypatch.setenv("RADBRIDGE_MAX_PDF_PAGES", "7")
    monkeypatch.setenv("RADBRIDGE_MAX_MESSAGE_BYTES", "1000")
    limits = Limits.from_settings(Settings())
    assert (limits.max_pdf_pages, limits.max_message_bytes) == (7, 1000)
    with pytest.raises(ValueError):
        Limits(max_reports=0)


def test_limit_exceeded_is_a_permanent_error_naming_the_limit():
    exc = LimitExceeded("max_reports", 5000, 1000, where="Bundle.entry")
    assert isinstance(exc, PermanentError) and exc.kind == "limit_exceeded" and not exc.retryable
    assert str(exc) == "max_reports exceeded at Bundle.entry: 5000 > 1000"


def test_message_bytes_are_checked_before_anything_parses_them():
    big = oru(finding("x" * 2000))
    small = Limits(max_message_bytes=1000)
    for call in (lambda: split_payload(big, small), lambda: read_message(big, limits=small),
                 lambda: read_payload(big, limits=small), lambda: read_fhir(b"{" + b" " * 2000 + b"}", limits=small)):  # fmt: skip
        with pytest.raises(LimitExceeded) as info:
            call()
        assert info.value.limit == "max_message_bytes"


def test_the_pipeline_dead_letters_a_message_over_a_limit():
    data = oru(finding("Lungs are clear."), groups=3)
    [out] = Drafter(InstantGenerator()).process([Envelope(data, location="t")])
    assert out.status == "drafted"  # the defaults leave room for real messages
    with pytest.raises(LimitExceeded):
        read_message(data, limits=Limits(max_reports=2))


def test_a_20_mb_obx_is_refused_not_prompted():
    data = oru(finding("Heart size normal. " * 1_100_000))  # 20.9 MB
    with within():
        [out] = Drafter(InstantGenerator()).process([Envelope(data, location="t")])
    assert out.status == "rejected" and out.error.kind == "limit_exceeded"
    assert out.error.limit == "max_message_bytes"


def test_text_characters_per_report_bound_an_obx_under_the_byte_limit():
    data = oru(finding("Heart size normal. " * 10_000))  # 190 KB: under the bytes limit, over the text limit
    with within(), pytest.raises(LimitExceeded) as info:
        read_hl7v2(data)
    assert info.value.limit == "max_text_chars" and info.value.where == "OBR[1]"
    (report,) = read_hl7v2(data, limits=Limits(max_text_chars=500_000))
    assert len(report.findings) > 100_000


def test_segments_per_message():
    data = oru(*[finding("Clear.")] * 50)
    with pytest.raises(LimitExceeded) as info:
        read_hl7v2(data, limits=Limits(max_segments=20))
    assert info.value.limit == "max_segments" and info.value.where == "segment 21"
    with within():
        with pytest.raises(LimitExceeded):
            read_hl7v2(oru(*[finding("Clear.")] * 200_000))  # 8.6 MB, stopped by the bytes limit
        with pytest.raises(LimitExceeded):
            read_hl7v2(oru(*[finding("C")] * 20_000))


# -- HL7 escapes --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seq", ["\\.sp999999999\\", "\\.sp100000000\\", "\\.sp" + "9" * 5000 + "\\", "\\.sp²\\"])
def test_sp_escape_repeats_are_capped(seq):
    with within():
        text = unescape(f"a{seq}b" * 1000)
    assert len(text) <= 1000 * (MAX_ESCAPE_REPEAT + 2)


def test_sp_escape_bomb_in_a_message_reads_quickly():
    data = oru(finding("Heart size normal." + "\\.sp999999999\\" * 10 + "Lungs clear."))
    with within():
        (report,) = read_hl7v2(data)
    assert report.findings.startswith("Heart size normal.") and report.findings.endswith("Lungs clear.")


@pytest.mark.parametrize("code", ["in", "ti", "sk"])
def test_indent_and_skip_escapes_give_nothing(code):
    with within():
        assert unescape(f"a\\.{code}999999999\\b" * 1000) == "ab" * 1000


def test_sp_keeps_small_counts():
    assert unescape("a\\.sp3\\b\\.sp\\c") == "a\n\n\nb\nc"


# -- HTML -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "markup",
    ["<!--" * 150_000, "<title " * 150_000, "<title>" * 150_000, "<head>" * 150_000, "<script>" * 150_000,
     "<" * 800_000, "<p" * 400_000, "<!" * 400_000, "</" * 400_000, "<a " + "x=1 " * 200_000,
     "&#" + "9" * 5000 + ";", "<br>" * 200_000],
    ids=["comments", "title-space", "title", "head", "script", "lt", "p-open", "decl", "close", "attrs", "entity",
         "br"],
)  # fmt: skip
def test_html_bombs_are_linear(markup):
    with within():
        html_to_text(markup)


def test_html_attachment_bomb_in_a_message():
    raw = ("<p>Lungs clear.</p>" + "<!--" * 150_000).encode()
    obx = f"OBX|1|ED|18748-4^Diagnostic imaging^LN||RIS^TEXT^HTML^Base64^{base64.b64encode(raw).decode()}||||||P"
    with within():
        (report,) = read_hl7v2(oru(obx))
    assert report.findings == "Lungs clear."


def test_html_text_is_unchanged_for_ordinary_markup():
    markup = ("<!DOCTYPE html><html><head><title>T</title><style>p{}</style></head><body><h1>Chest</h1>"
              "<p>One &amp; two</p><div>three<br/>four</div><table><tr><td>a</td><td>b</td></tr></table>"
              "<!-- note --><p>size &lt;3 cm; also <3 cm</p><script>x<y</script></body></html>")  # fmt: skip
    assert html_to_text(markup) == "Chest\nOne & two\nthree\nfour\na b\nsize <3 cm; also <3 cm"


def test_unclosed_head_does_not_hide_the_body():
    assert html_to_text("<html><head><meta charset=utf-8><body><p>Lungs clear.</p>") == "Lungs clear."


# -- sections ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lines", [10_000, 20_000])
def test_section_splitting_is_linear_in_heading_lines(lines):
    text = "FINDINGS: clear.\nIMPRESSION: normal.\n" * (lines // 2)
    with within():
        s = split_sections(text)
    assert s.headings == ("findings", "impression") and s.findings.count("\n") == lines // 2 - 1


@pytest.mark.parametrize(
    "text",
    ["FINDINGS" + " " * 200_000 + "x", "FINDINGS" + " \t" * 100_000 + "/" + " " * 100_000, "x. Findings: y " * 20_000,
     "FINDINGS\n" * 20_000, "CLINICAL" + " " * 200_000 + "x", "a. " + " " * 200_000 + "Impression x"],
)  # fmt: skip
def test_section_heading_regexes_do_not_backtrack(text):
    with within():
        split_sections(text)


# -- FHIR -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [5_000, 50_000])
def test_bundle_with_thousands_of_reports_is_refused_before_reading_them(n):
    data = bundle(*[dr(conclusion="Normal.", presentedForm=[])] * n)
    with within(), pytest.raises(LimitExceeded) as info:
        read_fhir(data, limits=Limits(max_message_bytes=len(data)))  # the report count alone stops it
    assert info.value.limit == "max_reports" and info.value.size == n


def test_bundle_reports_under_the_limit_are_read():
    data = bundle(*[dr(conclusion="Normal.", text={"status": "additional", "div": "<div>FINDINGS: clear.</div>"})] * 300)
    with within(10.0):
        items = read_fhir(data)
    assert len(items) == 300


def test_nested_bundles_count_towards_the_limits():
    inner = json.loads(bundle(*[dr()] * 3))
    with pytest.raises(LimitExceeded) as info:
        read_fhir(bundle(inner, inner), limits=Limits(max_reports=5))
    assert info.value.limit == "max_reports" and info.value.size == 6
    with pytest.raises(LimitExceeded) as info:
        read_fhir(bundle(inner, inner), limits=Limits(max_entries=7))
    assert info.value.limit == "max_entries" and info.value.size == 8


def test_contained_and_results_are_bounded():
    many = [{"reference": f"#o{i}"} for i in range(50)]
    with pytest.raises(LimitExceeded) as info:
        read_fhir(json.dumps(dr(result=many)).encode(), limits=Limits(max_entries=10))
    assert info.value.limit == "max_entries" and info.value.where == "DiagnosticReport.result"


def test_deeply_nested_json_is_malformed_not_a_crash():
    from radbridge.errors import MalformedMessage

    with within(), pytest.raises(MalformedMessage):
        read_fhir(b'{"a":' * 100_000 + b"1" + b"}" * 100_000)


# -- attachments: bytes, PDF pages, extracted text --------------------------------------------------------


def test_attachment_bytes():
    with pytest.raises(LimitExceeded) as info:
        read_attachment(b"Lungs clear. " * 100, "text/plain", limits=Limits(max_attachment_bytes=1000))
    assert info.value.limit == "max_attachment_bytes"


def test_pdf_of_5000_pages_sharing_one_content_stream():
    raw = pdf(5_000, text_stream("Lungs are clear", 100))
    with within(), pytest.raises(LimitExceeded) as info:
        read_attachment(raw, "application/pdf")
    assert info.value.limit == "max_pdf_pages" and info.value.size == 5_000


def test_pdf_of_40_pages_inflating_to_megabytes_of_text():
    raw = pdf(40, text_stream("Heart size normal and lungs clear", 20_000), compress=True)
    assert len(raw) < 20_000
    with within(), pytest.raises(LimitExceeded) as info:
        read_attachment(raw, "application/pdf")
    assert info.value.limit == "max_text_chars" and info.value.where == "PDF content streams"


def test_pdf_text_characters_are_bounded_page_by_page():
    raw = pdf(20, text_stream("Heart size normal and lungs clear", 200))  # ~6,800 characters a page
    with within(), pytest.raises(LimitExceeded) as info:
        read_attachment(raw, "application/pdf", limits=Limits(max_text_chars=30_000))
    assert info.value.limit == "max_text_chars"
    kind, text = read_attachment(raw, "application/pdf", limits=Limits(max_text_chars=200_000))
    assert kind == "application/pdf" and text.count("Heart size normal") == 20 * 200


def test_pdf_bomb_inside_a_fhir_report_is_dead_lettered():
    raw = pdf(5_000, text_stream("Lungs are clear", 10))
    data = json.dumps(dr(presentedForm=[{"contentType": "application/pdf", "data": base64.b64encode(raw).decode()}]))
    with within():
        [out] = Drafter(InstantGenerator()).process([Envelope(data.encode(), location="t")])
    assert out.status == "rejected" and out.error.limit == "max_pdf_pages"


def test_many_byte_order_marks_strip_in_linear_time():
    with within():
        with pytest.raises(PermanentError):
            split_payload(BOM * 1_000_000 + b"x")
