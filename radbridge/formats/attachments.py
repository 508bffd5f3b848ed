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

from ..errors import LimitExceeded
from ..limits import DEFAULT_LIMITS, Limits, on_time

PLAIN = frozenset({"text/plain", "text/markdown"})
HTML = frozenset({"text/html", "application/xhtml", "application/xhtml+xml"})
RTF = frozenset({"text/rtf", "application/rtf"})
PDF = frozenset({"application/pdf"})
READABLE = PLAIN | HTML | RTF | PDF

# HTML is tokenised by hand, every step a forward str.find: regexes such as "<!--.*?-->" rescan the rest of
# the text from each "<!--" and took minutes on 150,000 unclosed comments.
_TAG_START = re.compile(r"<(?:[A-Za-z!?]|/[A-Za-z])")  # any other "<" is text ("size <3 cm")
_TAG_NAME = re.compile(r"</?([A-Za-z][A-Za-z0-9:-]*)")
_BREAK_TAGS = frozenset(
    {"br", "hr", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table", "pre",
     "blockquote", "section", "dt", "dd"}
)
_CELL_TAGS = frozenset({"td", "th"})
_HIDDEN_TAGS = frozenset({"head", "script", "style", "title"})  # their content is not report text
_HIDDEN_END = {name: re.compile(rf"</{name}\s*>", re.IGNORECASE) for name in _HIDDEN_TAGS}
_LONG_ENTITY = re.compile(r"&#[0-9]{1000,};?")  # html.unescape's int() refuses such numbers (ValueError)
_SPACES = re.compile(r"[ \t\f\v\xa0]+")
_CHARSET = re.compile(r"(?i)charset\s*=\s*\"?([\w.:-]+)")


# pypdf warns about the structure of damaged files; what matters reaches the caller as UnreadableAttachment,
# and a library's log lines are not the place to decide what report text may leak.
logging.getLogger("pypdf").setLevel(logging.ERROR)


#: content-stream bytes a PDF may inflate to per text character allowed (a report page's drawing operators
#: take 1-2 bytes per character shown; kerned text arrays up to about 6)
PDF_CONTENT_BYTES_PER_CHAR = 4


class UnreadableAttachment(ValueError):
    """The attachment's kind is known but its bytes give no text; the message names why, not what."""


def html_to_text(markup: str) -> str:
    """XHTML/HTML -> plain text, one line per block element or <br/>; entities decoded. Linear time.

    Comments, declarations and head/script/style/title are dropped; an unclosed one drops the rest of the
    text, as a browser would show nothing of it either.
    """
    out: list[str] = []
    unclosed: set[str] = set()  # hidden elements with no end tag after some point: never searched for again
    i, n = 0, len(markup)
    while i < n:
        on_time()
        start = _TAG_START.search(markup, i)
        if start is None:
            out.append(markup[i:])
            break
        j = start.start()
        out.append(markup[i:j])
        if markup.startswith("<!--", j):
            k = markup.find("-->", j + 4)
            i = n if k < 0 else k + 3
            continue
        tag = _TAG_NAME.match(markup, j)  # None: <!doctype ...>, <?xml ...?>
        k = markup.find(">", j + 1)
        if k < 0:
            break  # a tag never closed: the rest is inside it
        i = k + 1
        if tag is None:
            continue  # <!doctype ...>, <?xml ...?>
        name = tag.group(1).lower()
        closing = markup.startswith("</", j)
        if name in _BREAK_TAGS:
            out.append("\n")
        elif name in _CELL_TAGS:
            out.append(" ")
        elif name in _HIDDEN_TAGS and not closing and markup[k - 1] != "/" and name not in unclosed:
            end = _HIDDEN_END[name].search(markup, i)
            if end is not None:
                i = end.end()
            elif name == "head":
                unclosed.add(name)  # browsers end <head> where the body starts: keep reading
            else:
                i = n  # an unclosed script, style or title holds the rest of the text
    text = _LONG_ENTITY.sub("\ufffd", "".join(out))
    return _tidy_lines(html.unescape(text))


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


def read_attachment(
    raw: bytes, media_type: str, charset: str | None = None, *, limits: Limits = DEFAULT_LIMITS
) -> tuple[str, str]:
    """(media type, plain text) of an attachment. The type is the declared one (a ``charset=`` parameter is
    honoured), except that PDF bytes are read as PDF whatever the label, and an empty type is sniffed.
    Raises UnreadableAttachment for a type outside ``READABLE`` or bytes that give no text, LimitExceeded
    for bytes, PDF pages or extracted text over ``limits``."""
    limits.check("max_attachment_bytes", len(raw), where="attachment")
    kind = media_type.split(";", 1)[0].strip().lower()
    m = _CHARSET.search(media_type[:256])
    charset = charset or (m.group(1) if m else None)
    if raw[:5] == b"%PDF-":
        return "application/pdf", _pdf_text(raw, limits)
    if kind in PDF:
        raise UnreadableAttachment("PDF attachment does not start with %PDF-")
    if kind and kind not in READABLE:
        raise UnreadableAttachment(f"content type {media_type_name(kind)} cannot be read")
    if b"\x00" in raw:
        raise UnreadableAttachment("attachment is binary, not text")
    text = decode_text(raw, charset)
    kind = kind or sniff(text)  # senders omit the type; sniff rather than lose the text
    if kind in HTML:
        text = html_to_text(text)
    elif kind in RTF:
        text = _rtf_text(text)
    else:
        text = text.strip()
    limits.check("max_text_chars", len(text), where="attachment")
    return kind, text


# When one report comes in several renditions, the one read (the others are named): the least lossy first.
_MEDIA_TYPE = re.compile(r"[a-z]{1,20}/[a-z0-9.+\-]{1,60}")


def media_type_name(kind: str) -> str:
    """A declared media type for a note: as sent when it has a media type's shape, else a placeholder."""
    return kind if _MEDIA_TYPE.fullmatch(kind) else "<non-standard content type>"


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


def _pdf_text(raw: bytes, limits: Limits) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted:
            raise UnreadableAttachment("PDF attachment is encrypted")
        pages = reader.pages
        limits.check("max_pdf_pages", len(pages), where="PDF attachment")
        parts: list[str] = []
        chars = content = 0
        for page in pages:
            on_time()
            # A page's content stream can be a small compressed object that inflates to megabytes (and many
            # pages can share it): bound the inflated bytes before pypdf interprets them (about 3 s a MB
            # here), at a few bytes per text character allowed, and the text after.
            stream = page.get_contents()
            content += len(stream.get_data()) if stream is not None else 0
            if content > PDF_CONTENT_BYTES_PER_CHAR * limits.max_text_chars:
                raise LimitExceeded("max_text_chars", content // PDF_CONTENT_BYTES_PER_CHAR, limits.max_text_chars,
                                    where="PDF content streams")
            parts.append(page.extract_text() or "")
            chars += len(parts[-1])
            limits.check("max_text_chars", chars, where="PDF attachment")
        text = "\n".join(parts)
    except (UnreadableAttachment, LimitExceeded):
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
