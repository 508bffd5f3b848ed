"""Transport wrappers around a message's bytes: a UTF-8 byte-order mark and HL7 MLLP frames.

The one place that knows them; format detection, the HL7 v2 stream splitter and the HL7 v2 parser all
unwrap through here.
"""

from __future__ import annotations

import re

BOM = b"\xef\xbb\xbf"
MLLP_START = b"\x0b"
MLLP_END = b"\x1c"
_BLANK = b" \t\r\n"
_LEADING = re.compile(rb"[ \t\r\n]*(?:\xef\xbb\xbf[ \t\r\n]*)*")


def strip_bom(chunk: bytes) -> bytes:
    """Leading whitespace and byte-order marks removed (editors and some senders prepend several)."""
    # one linear scan: re-slicing per mark would copy the payload once per BOM
    end = _LEADING.match(chunk).end()
    return chunk[end:] if end else chunk


def mllp_blocks(data: bytes) -> list[bytes]:
    """The contents of MLLP frames (\\x0b ... \\x1c\\r); text outside frames is kept as its own block."""
    if MLLP_START not in data:
        return [data]
    blocks: list[bytes] = []
    for piece in data.split(MLLP_START):
        content, _, rest = piece.partition(MLLP_END)
        blocks.append(content)
        if rest.strip(_BLANK):  # bytes after an end-of-frame that belong to no frame: do not lose them
            blocks.append(rest)
    return blocks


def unframe(data: bytes) -> bytes:
    """One message's bytes without surrounding whitespace, byte-order marks or its MLLP frame."""
    body = strip_bom(data)
    if body.startswith(MLLP_START):
        body = strip_bom(body[len(MLLP_START) :].split(MLLP_END, 1)[0])
    return body.rstrip(_BLANK)
