"""Report attachments to text: plain, HTML, RTF and real PDF bytes; what cannot be read says why."""

from __future__ import annotations

import pytest
from pdf_helpers import text_pdf

from radbridge.formats.attachments import UnreadableAttachment, read_attachment

REPORT = ["FINDINGS: Small left pleural effusion. No pneumothorax.", "IMPRESSION: Small left pleural effusion."]


def test_pdf_text_layer_is_read_line_by_line():
    kind, text = read_attachment(text_pdf(REPORT), "application/pdf")
    assert kind == "application/pdf"
    assert text.splitlines() == REPORT


def test_pdf_bytes_are_read_as_pdf_whatever_the_label():
    kind, text = read_attachment(text_pdf(REPORT), "application/octet-stream")
    assert (kind, text.splitlines()) == ("application/pdf", REPORT)


@pytest.mark.parametrize(
    "raw,why",
    [
        (b"%PDF-1.4 not really a pdf", "PDF attachment could not be read"),
        (text_pdf([]), "no text layer"),  # a page without text: a scanned image, for example
        (b"plain words", "does not start with %PDF-"),
    ],
)
def test_unreadable_pdf_says_why_without_quoting_it(raw, why):
    with pytest.raises(UnreadableAttachment) as info:
        read_attachment(raw, "application/pdf")
    assert why in str(info.value)
    assert "words" not in str(info.value)


def test_rtf_from_a_dictation_system():
    rtf = (r"{\rtf1\ansi\deff0{\fonttbl{\f0\fswiss Arial;}}\f0\fs20 FINDINGS:\par Small left pleural effusion. "
           r"Caf\'e9 sign absent.\par\pard IMPRESSION:\par\b Small left pleural effusion.\b0\par}")  # fmt: skip
    kind, text = read_attachment(rtf.encode("ascii"), "text/rtf")
    assert kind == "text/rtf"
    assert text.splitlines() == ["FINDINGS:", "Small left pleural effusion. Café sign absent.", "IMPRESSION:",
                                 "Small left pleural effusion."]  # fmt: skip
    with pytest.raises(UnreadableAttachment, match="does not start"):
        read_attachment(b"FINDINGS: clear.", "application/rtf")


def test_html_charset_and_sniffing():
    kind, text = read_attachment("<p>Opacit\u00e9 basale.</p><p>Pas d'\u00e9panchement.</p>".encode("latin-1"),
                                 "text/html; charset=ISO-8859-1")  # fmt: skip
    assert (kind, text) == ("text/html", "Opacité basale.\nPas d'épanchement.")
    assert read_attachment(b"<div>Clear lungs.<br/>No effusion.</div>", "")[1] == "Clear lungs.\nNo effusion."
    assert read_attachment(rb"{\rtf1 Clear lungs.\par}", "")[0] == "text/rtf"
    assert read_attachment(b"  Clear lungs.  ", "") == ("text/plain", "Clear lungs.")


def test_binary_bytes_are_not_text_whatever_the_label():
    with pytest.raises(UnreadableAttachment, match="binary"):
        read_attachment(b"\x89PNG\r\n\x1a\n\x00\x00", "text/plain")


def test_other_types_are_refused_by_name():
    with pytest.raises(UnreadableAttachment, match="content type image/jpeg cannot be read"):
        read_attachment(b"\xff\xd8\xff", "image/jpeg")
