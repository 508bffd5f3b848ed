"""Report text rules shared by training, retrieval examples and evaluation, so they cannot drift.

XrayGPT's filter (``keep_report``) and two optional rewrites: removing ``XXXX`` de-identification tokens and
removing sentences that compare with a prior study. Which rewrites are on is decided on the validation split
(docs/model-results.md) and recorded in the model manifest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A sentence that talks about an earlier study: the model only ever sees the current findings.
_PRIOR = re.compile(
    r"\b(prior|previous|previously|compared|comparison|interval|since|redemonstrat\w*|no change)\b",
    re.IGNORECASE,
)
_XXXX = re.compile(r"[\w-]*X{2,}[\w-]*")
# Sentence ends; OpenI also has "apex.There" with no space.
_SENT = re.compile(r"(?<=[.!?])\s+|(?<=[a-z]\.)(?=[A-Z])")


@dataclass(frozen=True)
class CleanRules:
    drop_xxxx: bool = False
    drop_prior_sentences: bool = False

    @property
    def id(self) -> str:
        return f"xxxx={'drop' if self.drop_xxxx else 'keep'},prior={'drop' if self.drop_prior_sentences else 'keep'}"

    @classmethod
    def from_dict(cls, d: dict | None) -> "CleanRules":
        d = d or {}
        return cls(bool(d.get("drop_xxxx", False)), bool(d.get("drop_prior_sentences", False)))


def sentences(text: str | None) -> list[str]:
    out: list[str] = []
    for s in (s.strip() for s in _SENT.split(text or "")):
        if not s:
            continue
        if out and re.fullmatch(r"\d+\.", out[-1]):  # "1. Effusion." is one numbered sentence
            out[-1] = f"{out[-1]} {s}"
        else:
            out.append(s)
    return out


def clean_text(text: str | None, rules: CleanRules) -> str:
    sents = sentences(text)
    if rules.drop_prior_sentences:
        # A text made only of comparisons keeps them rather than becoming empty.
        sents = [s for s in sents if not _PRIOR.search(s)] or sents
        # "Stable"/"unchanged" stay: they still state what is present now.
    out = " ".join(sents)
    if rules.drop_xxxx:
        out = _XXXX.sub("", out)
        out = re.sub(r"\s+([.,;:])", r"\1", re.sub(r"\s{2,}", " ", out)).strip()
    return out


def keep_report(r: dict) -> bool:
    """XrayGPT's filter: findings and impression present, findings >= 10 words, impression >= 2 words."""
    f, i = (r.get("findings") or "").strip(), (r.get("impression") or "").strip()
    return bool(f and i) and len(f.split()) >= 10 and len(i.split()) >= 2


def truncate_words(text: str, max_words: int | None) -> str:
    words = (text or "").split()
    if max_words is None or len(words) <= max_words:
        return " ".join(words)
    return " ".join(words[:max_words])
