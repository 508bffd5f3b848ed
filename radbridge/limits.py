"""How much of one message the readers will look at. Over a limit, reading stops with ``LimitExceeded``.

Every parser step is linear in its input, so these bound time and memory per message: a hostile or broken
sender cannot stall a partition with a small payload that expands (escape repeats, PDF pages sharing one
content stream) or with a large one. The defaults leave room for any real radiology report; the Settings
fields of the same names (``RADBRIDGE_MAX_MESSAGE_BYTES``, ...) change them.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, fields
from typing import Any, Iterator

from .errors import LimitExceeded, TooSlow


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 4 * 1024 * 1024  # one payload (record value or file), before any parsing
    max_segments: int = 10_000  # HL7 v2 segments in one message
    max_entries: int = 10_000  # FHIR Bundle entries (all nesting levels), contained resources or results
    max_reports: int = 1_000  # reports (OBR groups, DiagnosticReports) in one message
    max_attachment_bytes: int = 2 * 1024 * 1024  # one decoded attachment (PDF, RTF, HTML, text)
    max_pdf_pages: int = 50  # pages of one PDF attachment
    max_text_chars: int = 100_000  # text of one report, or extracted from one attachment
    # wall-clock seconds reading one message may take; over it, the message is dead-lettered as too_slow. Checked
    # inside the readers' loops (``on_time``) and when the read ends. Drafting is bounded by the model request
    # timeout and max_new_tokens.
    message_budget_s: float = 10.0

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 1:
                raise ValueError(f"{f.name} must be at least 1")

    @classmethod
    def from_settings(cls, settings: Any) -> "Limits":
        """The limits a Settings object (or anything with these attribute names) sets."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})

    def check(self, limit: str, size: int, *, where: str | None = None) -> None:
        """Raise LimitExceeded when ``size`` is over the limit named ``limit`` (a field name)."""
        maximum = getattr(self, limit)
        if size > maximum:
            raise LimitExceeded(limit, size, maximum, where=where)


DEFAULT_LIMITS = Limits()


# (started, budget) of the read in progress on this thread, or None outside one.
_READING: ContextVar[tuple[float, float] | None] = ContextVar("radbridge_reading", default=None)


@contextmanager
def reading_budget(budget_s: float) -> Iterator[None]:
    """Time the reads inside: ``on_time`` raises TooSlow once they have taken longer than ``budget_s``."""
    token = _READING.set((time.monotonic(), budget_s))
    try:
        yield
    finally:
        _READING.reset(token)


def on_time() -> None:
    """Raise TooSlow when the read in progress is over its budget (no-op outside ``reading_budget``).

    A thread cannot be stopped from outside, so the readers call this in their loops (per segment, entry, PDF page,
    HTML tag, heading): a read over budget stops at the next step instead of running to its end. Cheap (a
    context-variable lookup and a clock read).
    """
    reading = _READING.get()
    if reading is not None:
        elapsed = time.monotonic() - reading[0]
        if elapsed > reading[1]:
            raise TooSlow(elapsed, reading[1])
