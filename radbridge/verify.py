"""Checks a draft impression against the findings of its own report, before a radiologist reads it.

Built on the project's labeler (radbridge.labeler: CheXpert observations with negation, uncertainty and
laterality). Four kinds of problem, each an observation name and sides, never the report's words:

- laterality: the draft puts an observation on a side on which the findings never describe it;
- contradiction: the draft asserts an observation the findings negate, or negates one the findings assert;
- omission: the findings assert an observation (not negated, not merely possible) that the draft leaves out;
- unsupported: the draft asserts an abnormal observation the findings never mention.

The draft stays a preliminary report either way; the flags travel with it (FHIR DetectedIssue, HL7 v2 NTE) so
the radiologist sees them before signing. Work is bounded: each text is checked up to ``MAX_CHARS`` characters
(the labeler is linear in its input), and odd text never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from .labeler import LATERAL, NO_FINDING, Labels, label

#: Longest text checked, per side. Findings longer than this are checked on their first MAX_CHARS characters
#: and the result says so (``Verification.truncated``).
MAX_CHARS = 20_000


# A draft that states the study is normal, as opposed to one that merely leaves something out.
_NORMAL_CLAIM = re.compile(
    r"\b(no (acute|active|significant|evidence)|normal|unremarkable|negative (chest|study|exam\w*|radiograph))\b",
    re.IGNORECASE,
)


class FlagKind(str, Enum):
    LATERALITY = "laterality"
    CONTRADICTION = "contradiction"
    OMISSION = "omission"
    UNSUPPORTED = "unsupported"
    # The input, not the draft: the model drafted from text that may not be what the radiologist wrote.
    INPUT_TRUNCATED = "input-truncated"
    INPUT_CHARSET = "input-charset"
    INPUT_GARBLED = "input-garbled"


#: A wrong side or a reversed statement misleads; a missing or extra observation is for the reader to weigh.
SEVERITY: dict[FlagKind, str] = {
    FlagKind.LATERALITY: "high",
    FlagKind.CONTRADICTION: "high",
    FlagKind.OMISSION: "moderate",
    FlagKind.UNSUPPORTED: "moderate",
    FlagKind.INPUT_TRUNCATED: "moderate",
    FlagKind.INPUT_CHARSET: "moderate",
    FlagKind.INPUT_GARBLED: "moderate",
}

_TITLES: dict[FlagKind, str] = {
    FlagKind.LATERALITY: "Laterality conflict",
    FlagKind.CONTRADICTION: "Contradicts the findings",
    FlagKind.OMISSION: "Omitted finding",
    FlagKind.UNSUPPORTED: "Not supported by the findings",
    FlagKind.INPUT_TRUNCATED: "Findings look cut off",
    FlagKind.INPUT_CHARSET: "Character set in doubt",
    FlagKind.INPUT_GARBLED: "Unreadable characters in the findings",
}


@dataclass(frozen=True)
class Flag:
    kind: FlagKind
    observation: str  # a CheXpert observation name (radbridge.labeler)
    draft_sides: tuple[str, ...] = ()
    findings_sides: tuple[str, ...] = ()
    # An omission is high too when the draft calls the study normal: "no acute abnormality" over a pneumothorax.
    severe: bool = False

    @property
    def severity(self) -> str:
        return "high" if self.severe else SEVERITY[self.kind]

    @property
    def title(self) -> str:
        return _TITLES[self.kind]

    @property
    def detail(self) -> str:
        """One line for the reader: the observation and sides only, never report text."""
        obs = self.observation.lower()
        if self.kind is FlagKind.LATERALITY:
            return (f"{_TITLES[self.kind]}: the draft places {obs} on the {_side(self.draft_sides)}; the findings "
                    f"describe it on the {_side(self.findings_sides)} only.")
        if self.kind is FlagKind.CONTRADICTION:
            return f"{_TITLES[self.kind]}: the draft and the findings disagree on whether there is {obs}."
        if self.kind is FlagKind.INPUT_TRUNCATED:
            return f"{_TITLES[self.kind]}: the findings end mid-{self.observation}; the draft may miss what followed."
        if self.kind is FlagKind.INPUT_CHARSET:
            return (f"{_TITLES[self.kind]}: {self.observation}; accented or special characters in the findings may "
                    "be wrong.")
        if self.kind is FlagKind.INPUT_GARBLED:
            return f"{_TITLES[self.kind]}: the findings contain {self.observation}."
        if self.kind is FlagKind.OMISSION:
            where = f" ({_side(self.findings_sides)})" if self.findings_sides else ""
            return f"{_TITLES[self.kind]}: the findings report {obs}{where}; the draft does not mention it."
        return f"{_TITLES[self.kind]}: the draft reports {obs}; the findings do not mention it."

    def as_dict(self) -> dict:
        return {"kind": self.kind.value, "observation": self.observation, "severity": self.severity,
                "draft_sides": list(self.draft_sides), "findings_sides": list(self.findings_sides)}


def _side(sides: tuple[str, ...]) -> str:
    return "both sides" if set(sides) == {"left", "right"} else (sides[0] if sides else "unstated side")


@dataclass(frozen=True)
class Verification:
    flags: tuple[Flag, ...] = ()
    truncated: bool = False  # a text was longer than MAX_CHARS: only its start was checked

    def kinds(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.flags:
            out[f.kind.value] = out.get(f.kind.value, 0) + 1
        return out


def _label(text: str | None) -> tuple[Labels, bool]:
    text = text or ""
    return label(text[:MAX_CHARS]), len(text) > MAX_CHARS


def check(draft: str | None, findings: str | None) -> Verification:
    """The problems of ``draft`` against ``findings``, in a stable order (kind, then observation)."""
    d, d_cut = _label(draft)
    f, f_cut = _label(findings)
    flags: list[Flag] = []
    calls_normal = NO_FINDING in d.positive() and bool(_NORMAL_CLAIM.search((draft or "")[:MAX_CHARS]))
    for obs in sorted(set(d.labels) | set(f.labels)):
        if obs == NO_FINDING:
            continue
        dl, fl = d.labels.get(obs), f.labels.get(obs)
        if dl == "positive" and fl == "negative" or dl == "negative" and fl == "positive":
            flags.append(Flag(FlagKind.CONTRADICTION, obs))
        elif fl == "positive" and dl is None:
            flags.append(Flag(FlagKind.OMISSION, obs, findings_sides=_sorted(f.sides.get(obs)), severe=calls_normal))
        elif dl == "positive" and fl is None:
            flags.append(Flag(FlagKind.UNSUPPORTED, obs, draft_sides=_sorted(d.sides.get(obs))))
        # Sides are compared wherever both texts place the observation (positive or hedged mentions carry sides).
        if obs in LATERAL:
            dsides, fsides = d.sides.get(obs), f.sides.get(obs)
            if dsides and fsides and not dsides <= fsides:
                flags.append(Flag(FlagKind.LATERALITY, obs, _sorted(dsides), _sorted(fsides)))
    order = list(FlagKind)
    flags.sort(key=lambda fl: (order.index(fl.kind), fl.observation))
    return Verification(tuple(flags), truncated=d_cut or f_cut)


def _sorted(sides) -> tuple[str, ...]:
    return tuple(sorted(sides or ()))


def laterality_disagreements(draft: str, findings: str) -> list[str]:
    """Observations the draft puts on a side on which the findings never mention them (evaluation's count)."""
    return sorted(fl.observation for fl in check(draft, findings).flags if fl.kind is FlagKind.LATERALITY)


# How text ends when a sender cut it: a dangling connective or hyphen, or a last "sentence" that is one short word
# fragment after complete ones ("Heart size normal. Lun").
_DANGLING = re.compile(r"(?:[-,(/:]|\b(?:and|or|of|the|a|an|with|without|in|on|at|to|for|no|is|are|but|which|that))\s*\Z", re.IGNORECASE)
_FRAGMENT = re.compile(r"[.!?]\s+([A-Za-z]{1,4})\s*\Z")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def check_input(findings: str | None, unmapped: tuple[str, ...] = ()) -> tuple[Flag, ...]:
    """Problems with the findings a draft was made from (radbridge.verify's input kinds), from the text and the
    reader's notes (``Report.unmapped``). Heuristics, named as such in docs/design.md; never raises."""
    text = (findings or "")[-MAX_CHARS:].rstrip()
    flags: list[Flag] = []
    if text and (_DANGLING.search(text) or _FRAGMENT.search(text)):
        flags.append(Flag(FlagKind.INPUT_TRUNCATED, "word" if _FRAGMENT.search(text) else "sentence"))
    for note in unmapped:
        if "MSH-18" in note or "not UTF-8" in note:
            # the reader's own words: which declaration failed and how the bytes were read (no report text)
            flags.append(Flag(FlagKind.INPUT_CHARSET, note.split(":")[0].strip()[:80]))
            break
    if "\ufffd" in text:
        flags.append(Flag(FlagKind.INPUT_GARBLED, "replacement characters (bytes that could not be decoded)"))
    elif _CONTROL.search(text):
        flags.append(Flag(FlagKind.INPUT_GARBLED, "control characters"))
    return tuple(flags)
