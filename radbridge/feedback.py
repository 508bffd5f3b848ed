"""How a radiologist changed an AI draft before signing it: the comparison behind sign-off feedback (issue 15).

Pure functions over two texts (the draft radbridge wrote, the impression the radiologist signed) and the draft's
checker flags; the service and reports that publish the result are elsewhere. The result holds classes, counts and
observation names only, never report text, so it can go to a topic, a metric or a log.

Classes, on word tokens after lower-casing and dropping punctuation (``normalise``):
- ``accepted``: the same tokens (whitespace and punctuation edits only);
- ``light_edit``: word edit distance at most ``LIGHT_MAX_EDIT`` (25 %) of the longer text;
- ``replaced``: ROUGE-L F below ``REPLACED_MAX_ROUGE_L`` (0.25): little of the draft survived;
- ``heavy_edit``: anything in between.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import Enum
from typing import Sequence

from .labeler import LATERAL, label
from .verify import Flag, FlagKind

LIGHT_MAX_EDIT = 0.25
REPLACED_MAX_ROUGE_L = 0.25
MAX_TOKENS = 400  # edit distance is quadratic: longer impressions are compared on their first tokens

_PUNCT = re.compile(r"[^\w\s]")


class SignoffOutcome(str, Enum):
    ACCEPTED = "accepted"
    LIGHT_EDIT = "light_edit"
    HEAVY_EDIT = "heavy_edit"
    REPLACED = "replaced"
    NO_DRAFT = "no_draft"


def normalise(text: str | None) -> list[str]:
    return _PUNCT.sub(" ", (text or "").lower()).split()[:MAX_TOKENS]


def word_edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance over words (insert, delete, substitute one word)."""
    prev = list(range(len(b) + 1))
    for i, wa in enumerate(a, start=1):
        cur = [i]
        for j, wb in enumerate(b, start=1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (wa != wb)))
        prev = cur
    return prev[-1]


def _rouge_l(a: Sequence[str], b: Sequence[str]) -> float:
    """ROUGE-L F over the normalised tokens (LCS), the measure the evaluation reports."""
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for wa in a:
        cur = [0]
        for j, wb in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if wa == wb else max(prev[j], cur[j - 1]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


@dataclass(frozen=True)
class FlagFate:
    kind: str
    observation: str
    acted_on: bool | None  # None: the signed text cannot tell (input-quality flags)


@dataclass(frozen=True)
class Comparison:
    outcome: SignoffOutcome
    edit_distance: int
    edit_ratio: float
    rouge_l: float
    draft_words: int
    signed_words: int
    added: tuple[str, ...] = ()  # abnormal observations the radiologist added
    removed: tuple[str, ...] = ()  # abnormal observations the radiologist removed
    laterality_changed: tuple[str, ...] = ()
    flags: tuple[FlagFate, ...] = field(default_factory=tuple)
    seconds_to_sign: float | None = None

    def as_dict(self) -> dict:
        out = asdict(self)
        out["outcome"] = self.outcome.value
        return out


def compare(
    draft: str,
    signed: str,
    flags: Sequence[Flag] = (),
    *,
    drafted_at: datetime | None = None,
    signed_at: datetime | None = None,
) -> Comparison:
    d_tokens, s_tokens = normalise(draft), normalise(signed)
    distance = word_edit_distance(d_tokens, s_tokens)
    ratio = distance / max(len(d_tokens), len(s_tokens), 1)
    rouge_l = _rouge_l(d_tokens, s_tokens)
    if d_tokens == s_tokens:
        outcome = SignoffOutcome.ACCEPTED
    elif ratio <= LIGHT_MAX_EDIT:
        outcome = SignoffOutcome.LIGHT_EDIT
    elif rouge_l < REPLACED_MAX_ROUGE_L:
        outcome = SignoffOutcome.REPLACED
    else:
        outcome = SignoffOutcome.HEAVY_EDIT
    d_lab, s_lab = label(draft), label(signed)
    d_pos, s_pos = d_lab.positive() - {"No Finding"}, s_lab.positive() - {"No Finding"}
    lateral = sorted(
        o for o in d_pos & s_pos
        if o in LATERAL and d_lab.sides.get(o) and s_lab.sides.get(o) and d_lab.sides[o] != s_lab.sides[o]
    )
    seconds = (signed_at - drafted_at).total_seconds() if drafted_at and signed_at else None
    return Comparison(
        outcome=outcome,
        edit_distance=distance,
        edit_ratio=round(ratio, 4),
        rouge_l=round(rouge_l, 4),
        draft_words=len(d_tokens),
        signed_words=len(s_tokens),
        added=tuple(sorted(s_pos - d_pos)),
        removed=tuple(sorted(d_pos - s_pos)),
        laterality_changed=tuple(lateral),
        flags=tuple(_fate(f, d_lab, s_lab) for f in flags),
        seconds_to_sign=seconds,
    )


def _fate(flag: Flag, d_lab, s_lab) -> FlagFate:
    """Whether the radiologist's signed text did what the flag asked: fixed the side, added the omitted finding,
    removed the unsupported one, settled the contradiction differently from the draft."""
    obs = flag.observation
    s_label, d_label = s_lab.labels.get(obs), d_lab.labels.get(obs)
    if flag.kind is FlagKind.LATERALITY:
        acted = s_label != "positive" or s_lab.sides.get(obs) != d_lab.sides.get(obs)
    elif flag.kind is FlagKind.OMISSION:
        acted = s_label in ("positive", "uncertain")
    elif flag.kind is FlagKind.UNSUPPORTED:
        acted = s_label != "positive"
    elif flag.kind is FlagKind.CONTRADICTION:
        acted = s_label != d_label
    else:
        return FlagFate(flag.kind.value, obs, None)
    return FlagFate(flag.kind.value, obs, acted)
