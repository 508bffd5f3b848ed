"""Text out of a report attachment, the same way for FHIR ``presentedForm`` and HL7 v2 ED observations.

Radiology reports travel as plain text, HTML, RTF (many dictation systems) or PDF (outside reports, some RIS).
Each is turned into plain text with one line per paragraph; anything that cannot be read raises
``UnreadableAttachment`` with a reason that names the kind of problem, never the content. A PDF without a
text layer (a scanned page) is unreadable here: OCR is out of scope.
"""

from __future__ import annotations

import html
import io
import logging
import re

PLAIN = frozenset({"text/plain", "text/markdown"})
HTML = frozenset({"text/html", "application/xhtml", "application/xhtml+xml"})
RTF = frozenset({"text/rtf", "application/rtf"})
PDF = frozenset({"application/pdf"})
READABLE = PLAIN | HTML | RTF | PDF

_HTML_DROP = re.compile(r"(?is)<!--.*?-->|<!doctype[^>]*>|<\?xml[^>]*\?>|<(head|script|style|title)\b.*?</\1\s*>")
_HTML_BREAK = re.compile(
    r"(?i)<\s*(?:br|hr|/?p|/?div|/?li|/?tr|/?h[1-6]|/?ul|/?ol|/?table|/?pre|/?blockquote|/?section|/?dt|/?dd)\b[^>]*>"
)
_HTML_CELL = re.compile(r"(?i)<\s*/?\s*t[dh]\b[^>]*>")
_HTML_TAG = re.compile(r"<[^>]*>")
_SPACES = re.compile(r"[ \t\f\v\xa0]+")
_CHARSET = re.compile(r"(?i)charset\s*=\s*\"?([\w.:-]+)")


# pypdf warns about the structure of damaged files; what matters reaches the caller as UnreadableAttachment,
# and a library's log lines are not the place to decide what report text may leak.
logging.getLogger("pypdf").setLevel(logging.ERROR)


class UnreadableAttachment(ValueError):
    """The attachment's kind is known but its bytes give no text; the message names why, not what."""


def html_to_text(markup: str) -> str:
    """XHTML/HTML -> plain text, one line per block element or <br/>; entities decoded."""
    text = _HTML_DROP.sub("", markup)
    text = _HTML_BREAK.sub("\n", text)
    text = _HTML_CELL.sub(" ", text)
    text = html.unescape(_HTML_TAG.sub("", text))
    return _tidy_lines(text)


def decode_text(raw: bytes, charset: str | None = None) -> str:
    """Bytes of a text attachment: the declared charset if it works, else UTF-8 (BOM allowed), else Windows-1252."""
    if charset:
        try:
            return raw.decode(charset)
        except (LookupError, UnicodeDecodeError):
            pass
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def sniff(text: str) -> str:
    """Media type of a text attachment sent without one."""
    if re.match(r"(?s)\s*\{\\rtf", text):
        return "text/rtf"
    if re.match(r"(?is)\s*(<!doctype|<html|<div|<p\b)", text):
        return "text/html"
    return "text/plain"


def read_attachment(raw: bytes, media_type: str, charset: str | None = None) -> tuple[str, str]:
    """(media type, plain text) of an attachment. The type is the declared one (a ``charset=`` parameter is
    honoured), except that PDF bytes are read as PDF whatever the label, and an empty type is sniffed.
    Raises UnreadableAttachment for a type outside ``READABLE`` or bytes that give no text."""
    kind = media_type.split(";", 1)[0].strip().lower()
    m = _CHARSET.search(media_type)
    charset = charset or (m.group(1) if m else None)
    if raw[:5] == b"%PDF-":
        return "application/pdf", _pdf_text(raw)
    if kind in PDF:
        raise UnreadableAttachment("PDF attachment does not start with %PDF-")
    if kind and kind not in READABLE:
        raise UnreadableAttachment(f"content type {kind} cannot be read")
    if b"\x00" in raw:
        raise UnreadableAttachment("attachment is binary, not text")
    text = decode_text(raw, charset)
    kind = kind or sniff(text)  # senders omit the type; sniff rather than lose the text
    if kind in HTML:
        return kind, html_to_text(text)
    if kind in RTF:
        return kind, _rtf_text(text)
    return kind, text.strip()


# When one report comes in several renditions, the one read (the others are named): the least lossy first.
PREFERENCE = ("text/plain", "text/markdown", "text/html", "application/xhtml+xml", "application/xhtml", "text/rtf",
              "application/rtf", "application/pdf")  # fmt: skip


def _rtf_text(text: str) -> str:
    from striprtf.striprtf import rtf_to_text

    if not text.lstrip().startswith("{\\rtf"):
        raise UnreadableAttachment("RTF attachment does not start with {\\rtf")
    try:
        plain = rtf_to_text(text, errors="replace")
    except Exception as exc:  # noqa: BLE001 -- striprtf raises bare exceptions on broken control words
        raise UnreadableAttachment(f"RTF attachment could not be read ({type(exc).__name__})") from None
    return _tidy_lines(plain)


def _pdf_text(raw: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted:
            raise UnreadableAttachment("PDF attachment is encrypted")
        text = "\n".join(page.extract_text() or "" for page in reader.pages)
    except UnreadableAttachment:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise UnreadableAttachment(f"PDF attachment could not be read ({type(exc).__name__})") from None
    text = _tidy_lines(text)
    if not text:
        raise UnreadableAttachment("PDF attachment has no text layer (a scanned image?)")
    return text


def _tidy_lines(text: str) -> str:
    lines = (_SPACES.sub(" ", ln).strip() for ln in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    return "\n".join(ln for ln in lines if ln)
