"""How much of one message the readers will look at. Over a limit, reading stops with ``LimitExceeded``.

Every parser step is linear in its input, so these bound time and memory per message: a hostile or broken
sender cannot stall a partition with a small payload that expands (escape repeats, PDF pages sharing one
content stream) or with a large one. The defaults leave room for any real radiology report; the Settings
fields of the same names (``RADBRIDGE_MAX_MESSAGE_BYTES``, ...) change them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from .errors import LimitExceeded


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 4 * 1024 * 1024  # one payload (record value or file), before any parsing
    max_segments: int = 10_000  # HL7 v2 segments in one message
    max_entries: int = 10_000  # FHIR Bundle entries (all nesting levels), contained resources or results
    max_reports: int = 1_000  # reports (OBR groups, DiagnosticReports) in one message
    max_attachment_bytes: int = 2 * 1024 * 1024  # one decoded attachment (PDF, RTF, HTML, text)
    max_pdf_pages: int = 50  # pages of one PDF attachment
    max_text_chars: int = 100_000  # text of one report, or extracted from one attachment
    # wall-clock seconds reading one message may take (checked when it ends: the limits above bound it); over it,
    # the message is dead-lettered as too_slow. Drafting is bounded by the model request timeout and max_new_tokens.
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
