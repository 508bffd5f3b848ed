"""A rule-based labeler for the 14 CheXpert observations, with negation, uncertainty and laterality.

Our own rules (not CheXpert's or NegBio's code): each observation is a set of mention patterns; a mention is
judged inside its clause, where a clause ends at a contrast word ("but", "however", "although", "which", ";")
or at a comma that starts a new statement. It is negative if a negation cue precedes it in the clause or
follows it ("is not seen"), uncertain if the clause hedges ("may", "cannot exclude"), positive otherwise.
A text's label for an observation is its strongest mention: positive > uncertain > negative.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Label = Literal["positive", "negative", "uncertain"]
Side = Literal["left", "right"]

NO_FINDING = "No Finding"

_OBSERVATIONS: dict[str, str] = {
    "Enlarged Cardiomediastinum": (
        r"(widen\w*|enlarge\w*|prominen\w*) (of the )?(cardio)?mediastin\w*|"
        r"(cardio)?mediastin\w*( silhouette| contours?| width)? (is |are )?(\w+ )?(widen\w*|enlarged|prominent)"
    ),
    "Cardiomegaly": (
        r"cardiomegaly|cardiac enlargement|enlarge\w* (heart|cardiac)|"
        r"(heart|cardiac silhouette|cardiac shadow|heart size|cardiac size)( size)? (is |are |appears )?"
        r"(\w+ )?(enlarged|increased|large)"
    ),
    "Lung Lesion": r"nodul\w*|\bmass(es)?\b|lesions?\b|tumou?r|carcinoma|neoplasm|granulomas?\b|metasta\w*|cavitary",
    "Lung Opacity": (
        r"opaci\w*|infiltrat\w*|air ?space (disease|opaci\w*)|densit(y|ies)|haziness|"
        r"interstitial (markings|prominence|disease|changes)|scar(ring)?\b|fibrosis|fibrotic"
    ),
    "Edema": r"edema|(vascular|pulmonary) congestion|heart failure|\bchf\b",
    "Consolidation": r"consolidat\w*",
    "Pneumonia": r"pneumonia|infectio\w*|infectious process",
    "Atelectasis": r"atelecta\w*|collapse",
    "Pneumothorax": r"pneumothora(x|ces)",
    "Pleural Effusion": r"effusions?|pleural fluid|blunting of the (\w+ )?costophrenic",
    "Pleural Other": r"pleural (thickening|plaques?|scar\w*)|fibrothorax|pleural calcification",
    "Fracture": r"fractur\w*|\bfx\b",
    "Support Devices": (
        r"pacemaker|pacer\b|defibrillator|\baicd\b|\bicd\b|\bpicc\b|catheter|central (venous )?line|"
        r"(endotracheal|et|nasogastric|ng|feeding|chest|tracheostomy) tube|sternotomy|sternal wires|"
        r"(surgical|vascular) clips|port-?a-?cath|\bport\b|stent|prosthe\w*|hardware|fixation|valve replacement"
    ),
}
OBSERVATIONS: tuple[str, ...] = (NO_FINDING, *_OBSERVATIONS)
# Observations for which a side means something (a heart or a pacemaker has no wrong side to name).
LATERAL: frozenset[str] = frozenset(
    {"Lung Lesion", "Lung Opacity", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax",
     "Pleural Effusion", "Pleural Other", "Fracture"}
)
_PATTERNS = {name: re.compile(rf"\b(?:{pat})", re.IGNORECASE) for name, pat in _OBSERVATIONS.items()}

_BREAK = re.compile(
    r";|\b(?:but|however|although|though|whereas|except|with the exception of|aside from|apart from|"
    r"other than|which|while)\b",
    re.IGNORECASE,
)
# After a comma a new clause starts only if it makes its own statement ("no effusion, the heart is enlarged");
# a list ("no effusion, pneumothorax, or consolidation") keeps the negation going.
_VERB = re.compile(r"\b(is|are|was|were|has|have|seen|noted|demonstrated|identified|present|there)\b", re.I)
_LIST_CONT = re.compile(r"^\s*(or|and|nor)\b", re.IGNORECASE)

_EXCLUSION = re.compile(
    r"\b(cannot|can not|can't|could not|not) (be )?(exclude|excluded|ruled out|rule out)\b|\bnot excluded\b|"
    r"\b(exclude|rule out)\b",
    re.IGNORECASE,
)
_PRE_NEG = re.compile(
    r"\b(no|not|without|negative for|free of|clear of|absence of|absent|resolution of|resolved|nor|"
    r"no evidence of|no longer)\b",
    re.IGNORECASE,
)
_POST_NEG = re.compile(
    r"^[^.]*?\b((is|are|was|were|has been|have been) (not|no longer)|not (seen|identified|present|visualized|"
    r"demonstrated|evident|appreciated|noted)|(has|have) (resolved|cleared)|resolved|absent)\b",
    re.IGNORECASE,
)
_UNCERTAIN = re.compile(
    r"\b(may|might|possible|possibly|probable|probably|likely|questionable|question of|suspicious|suspect\w*|"
    r"concern\w*|could|suggest\w*|versus|vs|consider\w*|differential|borderline|equivocal|indeterminate|"
    r"uncertain|cannot|not excluded|vague|subtle|perhaps|presumed|presumably)\b",
    re.IGNORECASE,
)
_BILATERAL = re.compile(r"\b(bilateral\w*|bibasilar|bibasal|both)\b", re.IGNORECASE)
_LEFT = re.compile(r"\bleft\b", re.IGNORECASE)
_RIGHT = re.compile(r"\bright\b", re.IGNORECASE)
_SENT = re.compile(r"(?<=[.!?])\s+|(?<=[a-z]\.)(?=[A-Z])|\n+")


@dataclass(frozen=True)
class Labels:
    """Per-observation label for one text (absent = not mentioned), and the sides of non-negative mentions."""

    labels: dict[str, Label]
    sides: dict[str, frozenset[str]] = field(default_factory=dict)

    def positive(self) -> frozenset[str]:
        return frozenset(o for o, lab in self.labels.items() if lab == "positive")


def _clauses(sentence: str) -> list[str]:
    parts = _BREAK.split(sentence)
    out: list[str] = []
    for part in parts:
        chunks = part.split(",")
        cur = chunks[0]
        for ch in chunks[1:]:
            if _VERB.search(ch) and not _LIST_CONT.match(ch):
                out.append(cur)
                cur = ch
            else:
                cur = f"{cur},{ch}"
        out.append(cur)
    return [c for c in out if c.strip()]


def _judge(clause: str, start: int, end: int) -> Label:
    before, after = clause[:start], clause[end:]
    if _EXCLUSION.search(clause):
        return "uncertain"
    if _PRE_NEG.search(before) or _POST_NEG.search(after):
        return "negative"
    if _UNCERTAIN.search(clause):
        return "uncertain"
    return "positive"


def _sides(clause: str) -> set[str]:
    if _BILATERAL.search(clause):
        return {"left", "right"}
    sides = set()
    if _LEFT.search(clause):
        sides.add("left")
    if _RIGHT.search(clause):
        sides.add("right")
    return sides


_RANK = {"negative": 0, "uncertain": 1, "positive": 2}


def label(text: str | None) -> Labels:
    labels: dict[str, Label] = {}
    sides: dict[str, set[str]] = {}
    for sentence in _SENT.split(text or ""):
        for clause in _clauses(sentence):
            for obs, pat in _PATTERNS.items():
                for m in pat.finditer(clause):
                    lab = _judge(clause, m.start(), m.end())
                    if obs not in labels or _RANK[lab] > _RANK[labels[obs]]:
                        labels[obs] = lab
                    if lab != "negative" and obs in LATERAL:
                        sides.setdefault(obs, set()).update(_sides(clause))
    # CheXpert's convention: "No Finding" when nothing but devices is positive or uncertain.
    abnormal = [o for o, lab in labels.items() if o != "Support Devices" and lab != "negative"]
    if not abnormal:
        labels[NO_FINDING] = "positive"
    return Labels(labels, {o: frozenset(s) for o, s in sides.items() if s})


def abnormal(text: str | None) -> frozenset[str]:
    """Observations ``text`` asserts as present, "No Finding" aside: what clinical F1 scores."""
    return label(text).positive() - {NO_FINDING}
