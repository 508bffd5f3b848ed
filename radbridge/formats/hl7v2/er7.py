"""HL7 v2 ER7 ("pipe and hat") encoding: framing, delimiters, segments, escapes, date/times.

Why not hl7apy's tree parser on the hot path: building hl7apy's element tree costs tens of milliseconds
for a 17-segment ORU on this hardware (about 45 ms measured, with or without ``find_groups``), which alone
caps a core at ~20 messages/s against a 500/s target. Tokenising ER7 is simple and fast; hl7apy stays the
source of truth for what the encoding allows (``check_encoding_chars``), which versions exist
(``SUPPORTED_LIBRARIES``) and which segments each version defines (its ``SEGMENTS`` tables). The unit tests
cross-check this tokeniser against hl7apy's full parse on every fixture.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache

import hl7apy
from hl7apy.exceptions import InvalidEncodingChars

from ...errors import LimitExceeded, MalformedMessage
from ...redact import safe_code
from ..framing import mllp_blocks, strip_bom

_BATCH_SEGMENTS = (b"FHS", b"BHS", b"BTS", b"FTS")
_LINE = re.compile(rb"[^\r\n]+")
_SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}\Z")


# ---------------------------------------------------------------------------------------------------------
# Framing: one payload -> messages


def split_stream(data: bytes) -> list[bytes]:
    """Split a payload (file, MLLP stream, FHS/BHS batch) into the bytes of each message.

    Each message keeps its own bytes (and so its own sha256) minus framing, BOM and batch wrapper segments.
    Non-blank bytes before the first MSH are returned as a message of their own, so that reading it fails
    loudly instead of the bytes vanishing.
    """
    messages: list[bytes] = []
    for block in mllp_blocks(data):
        block = strip_bom(block)
        start = end = None
        for m in _LINE.finditer(block):
            line = m.group()
            stripped = strip_bom(line)
            head, sep = stripped[:3], stripped[3:4]
            is_header = sep and not sep.isalnum() and sep not in b" \t"
            if head == b"MSH" and is_header or head in _BATCH_SEGMENTS and is_header:
                if start is not None:
                    messages.append(block[start:end])
                start = end = None
                if head != b"MSH":
                    continue  # batch wrappers carry no result; their counts are not checked
                start = m.start() + (len(line) - len(stripped))
            elif not line.strip():
                continue
            elif start is None:
                start = m.start()
            end = m.end()
        if start is not None:
            messages.append(block[start:end])
    return messages


# ---------------------------------------------------------------------------------------------------------
# Delimiters and segments


@dataclass(frozen=True)
class Delimiters:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str | None = None  # HL7 2.7+ fifth encoding character


DEFAULT_DELIMITERS = Delimiters()


def read_delimiters(msh: str, *, message_id: str | None = None) -> Delimiters:
    """MSH-1 and MSH-2 of a segment line that starts with "MSH"."""
    if len(msh) < 8:
        raise MalformedMessage("MSH segment too short to hold its delimiters", message_id=message_id, where="MSH-2")
    field = msh[3]
    encoding = msh[4:].split(field, 1)[0]
    if field.isalnum() or field.isspace() or len(encoding) < 4 or len(encoding) > 5:
        raise MalformedMessage("invalid field separator or encoding characters", message_id=message_id, where="MSH-2")
    chars = {
        "FIELD": field,
        "COMPONENT": encoding[0],
        "REPETITION": encoding[1],
        "ESCAPE": encoding[2],
        "SUBCOMPONENT": encoding[3],
    }
    try:
        hl7apy.check_encoding_chars(chars)
    except InvalidEncodingChars:
        raise MalformedMessage("duplicate encoding characters", message_id=message_id, where="MSH-2") from None
    if any(c.isalnum() or c.isspace() for c in encoding):
        raise MalformedMessage("invalid encoding characters", message_id=message_id, where="MSH-2")
    return Delimiters(field, encoding[0], encoding[1], encoding[2], encoding[3], encoding[4] if len(encoding) == 5 else None)


class Segment:
    """One segment; ``seg[n]`` is field n (1-based as in the standard, MSH-1 being the field separator)."""

    __slots__ = ("name", "fields", "position")

    def __init__(self, name: str, fields: list[str], position: int):
        self.name = name
        self.fields = fields
        self.position = position  # 1-based place in the message

    def __getitem__(self, n: int) -> str:
        return self.fields[n] if n < len(self.fields) else ""

    def __repr__(self) -> str:  # names only: a segment's content may be patient data
        return f"Segment({self.name}, {len(self.fields) - 1} fields, at {self.position})"


def split_segments(
    text: str, delims: Delimiters, *, message_id: str | None = None, max_segments: int | None = None
) -> list[Segment]:
    """Segments of one message; CR, LF and CRLF all end a segment, blank lines are ignored.

    Raises LimitExceeded past ``max_segments``."""
    segments: list[Segment] = []
    fs = delims.field
    for line in text.replace("\r\n", "\r").replace("\n", "\r").split("\r"):
        if not line.strip():
            continue
        position = len(segments) + 1
        if max_segments is not None and position > max_segments:
            raise LimitExceeded("max_segments", position, max_segments, where=f"segment {position}")
        name = line[:3]
        if not _SEGMENT_NAME.match(name) or (len(line) > 3 and line[3] != fs):
            raise MalformedMessage("not an HL7 segment", message_id=message_id, where=f"segment {position}")
        parts = line.split(fs)
        if name == "MSH":
            if segments:
                raise MalformedMessage(
                    "a second MSH: several messages in one payload (split the stream first)",
                    message_id=message_id,
                    where=f"segment {position}",
                )
            fields = ["MSH", fs, *parts[1:]]
        else:
            fields = parts
        segments.append(Segment(name, fields, position))
    return segments


def repetitions(value: str, delims: Delimiters) -> list[str]:
    return value.split(delims.repetition) if value else []


# ---------------------------------------------------------------------------------------------------------
# Escape sequences

#: the most line breaks one ``\.sp<n>\`` gives (``\.in``, ``\.ti`` and ``\.sk`` give none at all)
MAX_ESCAPE_REPEAT = 100
_FORMATTING_BREAKS = {".br": "\n", ".fi": "", ".nf": "", ".ce": "\n", "H": "", "N": ""}


def unescape(text: str, delims: Delimiters = DEFAULT_DELIMITERS, *, charset: str = "utf-8") -> str:
    """Decode the escape sequences of one text value (HL7 v2 chapter 2.7).

    Delimiter escapes become their characters, ``\\.br\\``/``\\.sp\\``/``\\.ce\\`` line breaks, hex escapes
    ``\\Xhh\\`` the bytes they stand for; highlighting, indentation and character-set switches are dropped.
    An escape character without a closing one is kept as written.
    """
    esc = delims.escape
    if esc not in text:
        return text
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != esc:
            j = text.find(esc, i)
            j = n if j < 0 else j
            out.append(text[i:j])
            i = j
            continue
        close = text.find(esc, i + 1)
        if close < 0:
            out.append(text[i:])
            break
        seq = text[i + 1 : close]
        decoded = _decode_escape(seq, delims, charset)
        if decoded is None:  # not an escape after all (e.g. a lone backslash in free text): keep it
            out.append(esc)
            i += 1
            continue
        out.append(decoded)
        i = close + 1
    return "".join(out)


def _decode_escape(seq: str, delims: Delimiters, charset: str) -> str | None:
    if seq == "F":
        return delims.field
    if seq == "S":
        return delims.component
    if seq == "T":
        return delims.subcomponent
    if seq == "R":
        return delims.repetition
    if seq == "E":
        return delims.escape
    if seq == "P":
        return delims.truncation or "#"
    if seq in _FORMATTING_BREAKS:
        return _FORMATTING_BREAKS[seq]
    if seq.startswith(".sp"):
        # capped: "\.sp999999999\" is 15 bytes that would otherwise become a gigabyte of line breaks
        arg = seq[3:].strip()
        count = int(arg[:4]) if arg.isascii() and arg.isdigit() else 1
        return "\n" * min(count, MAX_ESCAPE_REPEAT)
    if seq.startswith((".in", ".ti", ".sk")):
        return ""
    if seq[:1] == "X" and len(seq) > 1:
        hexdigits = seq[1:]
        if len(hexdigits) % 2 == 0 and all(ch in "0123456789abcdefABCDEF" for ch in hexdigits):
            raw = bytes.fromhex(hexdigits)
            try:
                return raw.decode(charset)
            except (UnicodeDecodeError, LookupError):
                return raw.decode("latin-1")
        return None
    if seq[:1] in ("C", "M", "Z") and len(seq) > 1 and seq[1:].isalnum():
        return ""  # character-set switches and locally defined escapes carry no text
    return None


def escape(text: str, delims: Delimiters = DEFAULT_DELIMITERS) -> str:
    """Text -> an ER7 text value: delimiters escaped, line breaks as ``\\.br\\``, other control characters as
    ``\\Xhh\\`` (the inverse of unescape). The one ER7 escaper: the writer and the sample messages use it."""
    e = delims.escape
    out = text.replace(e, f"{e}E{e}")
    for char, code in ((delims.field, "F"), (delims.component, "S"), (delims.subcomponent, "T"), (delims.repetition, "R")):
        out = out.replace(char, f"{e}{code}{e}")
    out = out.replace("\r\n", "\n").replace("\r", "\n").replace("\n", f"{e}.br{e}")
    # Other control characters (e.g. MLLP framing bytes) never go raw inside a message: hex escapes.
    return _CONTROL.sub(lambda m: f"{e}X{ord(m.group()):02X}{e}", out)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f]")


# ---------------------------------------------------------------------------------------------------------
# Date/time (DTM, DT, TS)

_DTM = re.compile(
    r"(?P<y>\d{4})(?P<mo>\d{2})?(?P<d>\d{2})?T?(?P<h>\d{2})?(?P<mi>\d{2})?(?P<s>\d{2})?"
    r"(?:\.(?P<f>\d{1,6})\d*)?(?P<tz>[+-]\d{4})?\Z"
)


def parse_dtm(value: str) -> datetime | None:
    """An HL7 DTM at any precision (YYYY[MM[DD[HH[MM[SS[.S...]]]]]][+/-ZZZZ]); None if it is not one.

    Missing parts default to the start of the period; with no offset the result is naive (local time of the
    sender, which the message does not state).
    """
    m = _DTM.match(value.strip())
    if not m:
        return None
    g = m.groupdict()
    try:
        tz = None
        if g["tz"]:
            sign = 1 if g["tz"][0] == "+" else -1
            hours, minutes = int(g["tz"][1:3]), int(g["tz"][3:5])
            if hours > 14 or minutes > 59:
                return None
            tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
        return datetime(
            int(g["y"]),
            int(g["mo"] or 1),
            int(g["d"] or 1),
            int(g["h"] or 0),
            int(g["mi"] or 0),
            int(g["s"] or 0),
            int((g["f"] or "0").ljust(6, "0")),
            tzinfo=tz,
        )
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------------------
# Versions and their segment tables (from hl7apy)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


SUPPORTED_VERSIONS: tuple[str, ...] = tuple(sorted(hl7apy.SUPPORTED_LIBRARIES, key=_version_key))
_VERSION = re.compile(r"(?P<v>2\.\d+(?:\.\d+)?)")


def resolve_version(declared: str) -> str | None:
    """The hl7apy version whose tables read a message declaring ``declared`` (MSH-12.1).

    An exact match when hl7apy has it; otherwise the nearest older supported version (a newer version's
    message is mostly its predecessor plus new segments), or the oldest for anything older. None when the
    text is not an HL7 v2 version number at all.
    """
    m = _VERSION.match(declared.strip())
    if not m:
        return None
    version = m.group("v")
    if version in hl7apy.SUPPORTED_LIBRARIES:
        return version
    key = _version_key(version)
    older = [v for v in SUPPORTED_VERSIONS if _version_key(v) <= key]
    return older[-1] if older else SUPPORTED_VERSIONS[0]


@lru_cache(maxsize=None)
def segments_of(version: str) -> frozenset[str]:
    return frozenset(hl7apy.load_library(version).SEGMENTS)


def first_version_defining(segment: str) -> str | None:
    """The oldest hl7apy version whose tables define ``segment`` (for PRT in a 2.5.1 message: 2.7)."""
    return next((v for v in SUPPORTED_VERSIONS if segment in segments_of(v)), None)


# ---------------------------------------------------------------------------------------------------------
# hl7apy's full element tree: slow (tens of ms a message), for audits and for cross-checking the tokeniser


def hl7apy_parse(message: str, *, find_groups: bool = False):
    """Parse one message with hl7apy, leniently; returns (hl7apy Message, notes on what had to be adapted).

    hl7apy needs CR separators, rejects versions it has no tables for and segments its version's tables
    lack (PRT in 2.5.1). Rather than lose such a message, it is re-read with the nearest supported version,
    or with the oldest version that defines the unknown segment, and that is noted.
    """
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    text = message.replace("\r\n", "\r").replace("\n", "\r").strip("\r\n \ufeff")
    lines = [ln for ln in text.split("\r") if ln.strip()]
    delims = read_delimiters(lines[0])
    msh = lines[0].split(delims.field)
    while len(msh) < 12:
        msh.append("")
    declared = msh[11].split(delims.component)[0]
    version = resolve_version(declared) or "2.5.1"
    shown = safe_code(declared) if declared.strip() else "empty"  # MSH-12 is the sender's text
    notes: list[str] = [] if version == declared else [f"version {shown} read as {version}"]
    unknown = sorted({ln[:3] for ln in lines} - segments_of(version) - {"MSH"})
    unknown = [name for name in unknown if not name.startswith("Z")]  # hl7apy reads Z-segments as they are
    # Newer versions that define every unknown segment, oldest first; hl7apy's tables for some of them fail
    # on fields withdrawn from the standard, so each is only a candidate.
    candidates = [version] if not unknown else [
        v for v in SUPPORTED_VERSIONS
        if _version_key(v) > _version_key(version) and all(name in segments_of(v) for name in unknown)
    ]
    for candidate in candidates:
        msh[11] = candidate
        lines[0] = delims.field.join(msh)
        try:
            parsed = parse_message("\r".join(lines), find_groups=find_groups, validation_level=VALIDATION_LEVEL.TOLERANT)
        except Exception:  # hl7apy raises assorted types (InvalidName, TypeError) for tables it cannot apply
            continue
        if candidate != version:
            notes.append(f"{', '.join(unknown)} need HL7 {candidate}: read as {candidate}")
        return parsed, notes
    # Last resort: leave the unknown segments out of hl7apy's tree (the caller keeps their raw text).
    msh[11] = version
    lines[0] = delims.field.join(msh)
    kept = [ln for ln in lines if ln[:3] not in unknown]
    notes.append(f"{', '.join(unknown)} not parsed by hl7apy (unknown to HL7 {version})")
    try:
        parsed = parse_message("\r".join(kept), find_groups=find_groups, validation_level=VALIDATION_LEVEL.TOLERANT)
    except Exception as exc:
        raise MalformedMessage(f"hl7apy cannot parse the message ({type(exc).__name__})") from None
    return parsed, notes
