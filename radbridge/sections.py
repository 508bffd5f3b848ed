"""Split free report text into sections by the headings radiologists write (FINDINGS:, IMPRESSION:, ...).

Pure text in, text out; shared by the HL7 v2 and FHIR readers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .limits import on_time

# Section name -> heading spellings seen in radiology reports (matched case-insensitively, plural or not).
HEADINGS: dict[str, tuple[str, ...]] = {
    "findings": ("findings", "finding", "report findings", "observations", "description", "report"),
    "impression": (
        "impression",
        "impressions",
        "conclusion",
        "conclusions",
        "summary",
        "opinion",
        "interpretation",
        "diagnosis",
        "assessment",
        "final impression",
        "clinical impression",
    ),
    "indication": (
        "indication",
        "indications",
        "clinical indication",
        "clinical indications",
        "history",
        "clinical history",
        "clinical information",
        "clinical details",
        "reason for exam",
        "reason for examination",
        "reason for study",
        "reason",
    ),
    "comparison": ("comparison", "comparisons", "prior", "priors", "prior studies", "comparison studies"),
    "technique": ("technique", "techniques", "procedure", "exam", "examination", "protocol", "views"),
    "recommendation": ("recommendation", "recommendations", "follow-up", "follow up"),
}

_BY_SPELLING = {spelling: name for name, spellings in HEADINGS.items() for spelling in spellings}
_ALTERNATION = "|".join(sorted((re.escape(s).replace(r"\ ", r"\s+") for s in _BY_SPELLING), key=len, reverse=True))
# A heading is recognised at the start of a line (any case), or inline when written in capitals
# ("... normal. IMPRESSION: ..."), which is how single-line OBX text carries several sections.
# "INDICATION/CLINICAL QUESTION:" — a compound heading counts as its first known part
_LINE_HEADING = re.compile(
    rf"(?im)^[ \t]*(?P<h>{_ALTERNATION})(?:[ \t]*/[ \t]*[a-z][a-z \t]{{0,40}}?)?[ \t]*(?::|-(?=\s))[ \t]*"
)
# A heading alone on its line, without a colon ("IMPRESSION" then the text on the next lines).
# (one run of blanks before the optional colon: "[ \t]*:?[ \t]*$" backtracks quadratically on long blank runs)
_BARE_HEADING = re.compile(rf"(?im)^[ \t]*(?P<h>{_ALTERNATION})[ \t]*(?::[ \t]*)?$\n?")
_INLINE_HEADING = re.compile(rf"(?<=[\s.;])(?P<h>{_ALTERNATION.upper()})[ \t]*:[ \t]*")
# "... is normal. Impression: ..." -- a capitalised heading right after a sentence ends; the lower-case
# "the impression: ..." inside a sentence is prose and stays.
_TITLE_ALTERNATION = "|".join(sorted((a[:1].upper() + a[1:] for a in _ALTERNATION.split("|")), key=len, reverse=True))
_SENTENCE_HEADING = re.compile(rf"(?<=[.;!?])[ \t]+(?P<h>{_TITLE_ALTERNATION})[ \t]*:[ \t]*")


@dataclass(frozen=True)
class Sections:
    findings: str | None = None
    impression: str | None = None
    indication: str | None = None
    comparison: str | None = None
    technique: str | None = None
    recommendation: str | None = None
    # text before the first heading (or all text, when there is no heading)
    preamble: str | None = None
    headings: tuple[str, ...] = field(default=())  # section names found, in order

    @property
    def has_headings(self) -> bool:
        return bool(self.headings)


def _normalise(heading: str) -> str:
    return _BY_SPELLING[re.sub(r"\s+", " ", heading.strip().lower())]


def _tidy(text: str) -> str | None:
    lines = [ln.strip() for ln in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    out = "\n".join(ln for ln in lines if ln).strip()
    return out or None


def _merge(marks: list[tuple[int, int, str]], found) -> list[tuple[int, int, str]]:
    """``marks`` plus the matches in ``found`` (in text order) that overlap none of them; linear, so that
    thousands of heading lines cost no more than their length."""
    out: list[tuple[int, int, str]] = []
    k = 0
    for m in found:
        on_time()
        start, end = m.span()
        while k < len(marks) and marks[k][1] <= start:
            out.append(marks[k])
            k += 1
        if k < len(marks) and marks[k][0] < end:
            continue  # overlaps a heading already found
        out.append((start, end, _normalise(m["h"])))
    out.extend(marks[k:])
    return out


def split_sections(text: str | None) -> Sections:
    """Find the sections of a report. Repeated headings are joined in order; nothing is dropped."""
    if not text or not text.strip():
        return Sections()
    marks: list[tuple[int, int, str]] = []  # sorted, never overlapping: an earlier pattern's heading wins
    for pattern in (_LINE_HEADING, _BARE_HEADING, _INLINE_HEADING, _SENTENCE_HEADING):
        marks = _merge(marks, pattern.finditer(text))
    if not marks:
        return Sections(preamble=_tidy(text))
    parts: dict[str, list[str]] = {}
    order: list[str] = []
    for i, (_, end, name) in enumerate(marks):
        stop = marks[i + 1][0] if i + 1 < len(marks) else len(text)
        body = _tidy(text[end:stop])
        if name not in order:
            order.append(name)
        if body:
            parts.setdefault(name, []).append(body)
    joined = {name: "\n".join(bodies) for name, bodies in parts.items()}
    return Sections(preamble=_tidy(text[: marks[0][0]]), headings=tuple(order), **joined)
