"""The one prompt module: serving, training and evaluation all build prompts here, so they cannot drift.

A prompt is a (system, user) pair. Backends that take chat messages (the OpenAI-compatible API) send
``messages(prompt)``; backends that take a raw string (TGI ``/generate``, the local model, training)
send ``render(prompt, chat_format)``, which reproduces the base model's chat template byte for byte
(tested against the tokenizer's own template), so a chat endpoint and a raw endpoint see the same text.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

from .labeler import abnormal
from .textclean import CleanRules, clean_text, truncate_words

ChatFormat = Literal["chatml", "llama2", "plain"]

# The seed papers' instruction (Radiology-GPT, Radiology-Llama2).
PAPER_INSTRUCTION = "Derive the impression from findings in the radiology report"
SYSTEM = "You are a radiologist. Write the impression section of the report: short, in a radiologist's style."


@dataclass(frozen=True)
class Example:
    """A solved report shown to the model (retrieval-augmented prompts)."""

    findings: str
    impression: str
    # Cosine similarity of its findings to the report being drafted (retrieval), shown with ``+sim``.
    similarity: float | None = None
    ref: str | None = None  # its id in the examples file (never shown to the model)


@dataclass(frozen=True)
class PromptTemplate:
    """A versioned prompt recipe. Change the wording, bump ``version``: every draft records ``id``."""

    name: str = "paper"
    version: int = 1
    instruction: str = PAPER_INSTRUCTION
    include_indication: bool = False
    include_comparison: bool = False
    n_examples: int = 0
    # Example findings are cut to this many words (they cost prompt tokens; the impression is what matters).
    example_findings_words: int | None = None
    # Show each example's similarity to the report: near-duplicate findings (one radiologist's template) are
    # common and their impression is the one to follow; a weak match is only a hint at the style.
    show_similarity: bool = False
    # How the report's own findings are shaped (``findings_text``): cut to this many words, and the textclean
    # rules. Training applies them to every report, so serving and evaluation must too.
    findings_words: int | None = None
    drop_xxxx: bool = False
    drop_prior_sentences: bool = False
    # Wording policy, not prompt text: when the draft names no abnormal observation and neither does the most
    # similar example, the draft is that example's impression, verbatim (``settle``). The model decides whether
    # anything is abnormal; a normal study then reads the way this department's radiologists word one.
    copy_normal: bool = False
    # Wording policy ``+select<k>``: the draft and the impressions of the k most similar signed reports are
    # candidates; the one written is the one that agrees best with the others (similarity-weighted ROUGE-L, the
    # draft weighted 1) and with the abnormal observations the findings assert (``select``). A candidate whose
    # sides contradict the findings is never taken. Not prompt text: the prompt shows ``n_examples`` as before.
    select_from: int = 0
    # ``+len<n>`` (with ``+select``): the selection's utility also loses n/10 x |log((words + 1) / (draft words + 1))|,
    # so a signed impression much shorter (or longer) than the model's draft must agree much better to replace it.
    # Selection otherwise favours short boilerplate and writes shorter than the radiologists (docs/model-results.md).
    select_length_tenths: int = 0
    # Decoding policy ``+end<pct>``, not prompt text: the draft's first end is held (it goes on) when the model
    # gives the end of turn less than pct % probability (GenerationParams.end_threshold; the Drafter sends it,
    # backends that cannot apply it are refused at startup).
    end_threshold_pct: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.end_threshold_pct < 100:
            raise ValueError(f"+end<pct> takes a percentage below 100, not {self.end_threshold_pct}")
        if self.copy_normal and self.select_from:
            raise ValueError("+copynormal and +select are two wording policies: a template has one at most")
        if self.select_length_tenths and not self.select_from:
            raise ValueError("+len<n> weighs length in +select<k>: it needs +select")

    @property
    def id(self) -> str:
        flags = ""
        if self.include_indication:
            flags += "+indication"
        if self.include_comparison:
            flags += "+comparison"
        if self.n_examples:
            flags += f"+examples{self.n_examples}"
        if self.example_findings_words:
            flags += f"+exwords{self.example_findings_words}"
        if self.show_similarity:
            flags += "+sim"
        if self.findings_words:
            flags += f"+fwords{self.findings_words}"
        if self.drop_xxxx:
            flags += "+dropxxxx"
        if self.drop_prior_sentences:
            flags += "+dropprior"
        if self.copy_normal:
            flags += "+copynormal"
        if self.select_from:
            flags += f"+select{self.select_from}"
        if self.select_length_tenths:
            flags += f"+len{self.select_length_tenths}"
        if self.end_threshold_pct:
            flags += f"+end{self.end_threshold_pct}"
        return f"{self.name}-v{self.version}{flags}"

    @property
    def without_policy(self) -> "PromptTemplate":
        """The same prompts with no wording or decoding policy: what the model was trained on when this one serves
        it."""
        from dataclasses import replace

        return replace(self, copy_normal=False, select_from=0, select_length_tenths=0, end_threshold_pct=0)

    @property
    def rules(self) -> CleanRules:
        return CleanRules(self.drop_xxxx, self.drop_prior_sentences)

    @classmethod
    def from_id(cls, template_id: str) -> "PromptTemplate":
        """Inverse of ``id``, so a manifest or a draft's record can name the template it needs."""
        m = re.fullmatch(r"(?P<name>[a-z0-9_]+)-v(?P<version>\d+)(?P<flags>(\+[a-z]+\d*)*)", template_id)
        if not m or m["name"] != "paper":
            raise ValueError(f"unknown prompt template id: {template_id!r}")
        flags = re.findall(r"\+([a-z]+)(\d*)", m["flags"])
        unknown = [name + n for name, n in flags if (name, bool(n)) not in _FLAGS]
        if unknown:
            # a misspelt flag silently ignored would build other prompts than the id claims
            raise ValueError(f"unknown flag(s) {', '.join('+' + u for u in unknown)} in prompt template id {template_id!r}")
        named = {name: int(n) if n else True for name, n in flags}
        return cls(
            version=int(m["version"]),
            include_indication="indication" in named,
            include_comparison="comparison" in named,
            n_examples=named.get("examples", 0),
            example_findings_words=named.get("exwords"),
            show_similarity="sim" in named,
            findings_words=named.get("fwords"),
            drop_xxxx="dropxxxx" in named,
            drop_prior_sentences="dropprior" in named,
            copy_normal="copynormal" in named,
            select_from=named.get("select", 0),
            select_length_tenths=named.get("len", 0),
            end_threshold_pct=named.get("end", 0),
        )


# (flag, takes a number)
_FLAGS = {("indication", False), ("comparison", False), ("examples", True), ("exwords", True), ("sim", False),
          ("fwords", True), ("dropxxxx", False), ("dropprior", False), ("copynormal", False), ("select", True),
          ("len", True), ("end", True)}


DEFAULT_TEMPLATE = PromptTemplate()


@dataclass(frozen=True)
class Prompt:
    system: str
    user: str
    template_id: str
    examples: tuple[Example, ...] = ()  # the examples shown, most similar last
    candidates: tuple[Example, ...] = ()  # +select<k>: the k nearest signed reports, not shown (``settle``)


def _clean_field(text: str | None) -> str:
    # One line per field; a line that ends without punctuation (one OBX line each) still ends a sentence.
    text = re.sub(r"(?<=[A-Za-z0-9)%])[ \t]*\n\s*", ". ", (text or "").strip())
    return re.sub(r"\s+", " ", text).strip()


def findings_text(template: PromptTemplate, findings: str | None) -> str:
    """The report's findings as the prompt shows them: the one place training, serving and evaluation shape them.

    Line breaks first become sentence ends (an HL7 OBX line each), then the template's clean rules apply per
    sentence, then the words cut. On single-line text (OpenI) this is exactly what training did before the
    rules moved into the template: ``truncate_words(clean_text(findings, rules), n)``.
    """
    return truncate_words(clean_text(_clean_field(findings), template.rules), template.findings_words)


def build(
    template: PromptTemplate,
    findings: str,
    *,
    indication: str | None = None,
    comparison: str | None = None,
    examples: Sequence[Example] = (),
    candidates: Sequence[Example] = (),
) -> Prompt:
    """The prompt for one report. ``examples`` are used only if the template asks for them; ``candidates`` (not
    shown) only by its wording policy."""
    parts = [template.instruction.rstrip(".") + "."]
    shown = tuple(examples)[: template.n_examples]
    for i, ex in enumerate(shown, start=1):
        ex_findings = _clean_field(ex.findings)
        if template.example_findings_words:
            ex_findings = " ".join(ex_findings.split()[: template.example_findings_words])
        head = f"Example {i}"
        if template.show_similarity and ex.similarity is not None:
            head += f" (similarity {ex.similarity:.2f})"
        parts.append(f"{head}:\nFindings: {ex_findings}\nImpression: {_clean_field(ex.impression)}")
    body = []
    if template.include_indication and _clean_field(indication):
        body.append(f"Indication: {_clean_field(indication)}")
    if template.include_comparison and _clean_field(comparison):
        body.append(f"Comparison: {_clean_field(comparison)}")
    body.append(f"Findings: {findings_text(template, findings)}")
    parts.append("\n".join(body))
    return Prompt(system=SYSTEM, user="\n\n".join(parts), template_id=template.id, examples=shown,
                  candidates=tuple(candidates) if template.select_from else ())


def messages(prompt: Prompt) -> list[dict[str, str]]:
    return [{"role": "system", "content": prompt.system}, {"role": "user", "content": prompt.user}]


def render(prompt: Prompt, chat_format: ChatFormat = "chatml") -> str:
    """The exact string a raw-text endpoint receives; ends where the model starts writing."""
    if chat_format == "chatml":
        return (
            f"<|im_start|>system\n{prompt.system}<|im_end|>\n"
            f"<|im_start|>user\n{prompt.user}<|im_end|>\n"
            "<|im_start|>assistant\n"
        )
    if chat_format == "llama2":
        return f"<s>[INST] <<SYS>>\n{prompt.system}\n<</SYS>>\n\n{prompt.user} [/INST]"
    if chat_format == "plain":
        return f"{prompt.system}\n\n{prompt.user}\n\nImpression:"
    raise ValueError(f"unknown chat format {chat_format!r}")


def end_of_turn(chat_format: ChatFormat) -> str:
    """What a training target ends with, so the model learns to stop."""
    return {"chatml": "<|im_end|>", "llama2": " </s>", "plain": "\n\n"}[chat_format]


STOP_SEQUENCES: dict[str, tuple[str, ...]] = {
    "chatml": ("<|im_end|>", "<|im_start|>"),
    "llama2": ("</s>", "[INST]"),
    "plain": ("\n\n",),
}


# Every chat format's end markers; plain's blank line is not one here (only its own generator cuts there).
ALL_STOPS: tuple[str, ...] = tuple(dict.fromkeys(s for stops in STOP_SEQUENCES.values() for s in stops if s.strip()))


def cut_at_stops(text: str, stops: Iterable[str]) -> str:
    """A completion up to its first stop marker: all a generator does to what the model wrote."""
    for stop in stops:
        idx = text.find(stop)
        if idx >= 0:
            text = text[:idx]
    return text


def clean_completion(text: str, stops: Iterable[str] = ALL_STOPS) -> str:
    """The impression out of a completion: cut at stop markers, drop a leading 'Impression:' label, ``tidy`` (the
    core calls this once per generation; generators only cut at their own stops)."""
    text = re.sub(r"^\s*(impression|conclusion)\s*:\s*", "", cut_at_stops(text, stops).strip(), flags=re.IGNORECASE)
    return tidy(re.sub(r"[ \t]+", " ", text).strip())


# A sentence's full stop followed by loose ones: "edema. ." (an ellipsis "..." is not touched).
_LOOSE_STOPS = re.compile(r"(?<=[^\s.])\.(?:\s+\.)+")


def tidy(text: str) -> str:
    """``text`` without the loose full stops after a sentence's own ("No acute disease. ." -> "No acute disease.").
    193 of the 2,281 OpenI training impressions end so (an artefact of de-identification), so the model learned to
    write them too: 11 of 161 greedy drafts on the tune part, 30 with ``+end90``. A radiologist should not have to
    delete them, and signed wording that ``+select`` or ``+copynormal`` copies is tidied the same way. ROUGE never
    saw them (its tokenizer drops punctuation); word counts did (each loose stop was a "word")."""
    return _LOOSE_STOPS.sub(".", text)


def settle(template: PromptTemplate, prompt: Prompt, draft: str, findings: str = "") -> tuple[str, Example | None]:
    """The impression to write for a cleaned completion, and the example whose wording it took (or None).

    ``+copynormal``: when neither the draft nor the most similar example's impression asserts an abnormal
    observation (radbridge.labeler), the example's impression is used verbatim; anything the model calls abnormal
    is always its own text. ``+select<k>``: ``select``. Without a policy, or with an empty draft, the draft.
    """
    if not draft:
        return draft, None
    if template.select_from:
        chosen = select(draft, prompt.candidates, findings, length_weight=template.select_length_tenths / 10)
        return (draft, None) if chosen is None else (tidy(chosen.impression.strip()), chosen)
    if not template.copy_normal or not prompt.examples:
        return draft, None
    nearest = max(reversed(prompt.examples), key=lambda ex: ex.similarity or 0.0)  # ties: the later one
    wording = nearest.impression.strip()
    if not wording or abnormal(draft) or abnormal(wording):
        return draft, None
    return tidy(wording), nearest


# The selection's weights, chosen on the tune part of OpenI valid (docs/model-results.md, "+select5") and frozen:
# the draft counts as much as a perfectly similar signed report, and agreeing with the findings' abnormal
# observations counts as much as agreeing with every other candidate word for word.
SELECT_DRAFT_WEIGHT = 1.0
SELECT_FINDINGS_WEIGHT = 1.0


def select(draft: str, candidates: Sequence[Example], findings: str, *, length_weight: float = 0.0,
           expected_words: float | None = None) -> Example | None:
    """The signed report among ``candidates`` whose impression should replace ``draft``, or None to keep the draft.

    Minimum-Bayes-risk selection with a clinical term: each candidate text (the draft and every candidate's
    impression) scores its similarity-weighted mean ROUGE-L F1 against the others, plus SELECT_FINDINGS_WEIGHT
    times the F1 between the abnormal observations it names and those the findings assert (both empty: 1). The
    best one wins; ties keep the draft. A candidate impression that puts an observation on a side the findings
    never mention (radbridge.verify) is not considered: copied wording must not bring a laterality error.
    ``length_weight`` (``+len<n>``) subtracts that times |log((words + 1) / (expected + 1))| from each utility, the
    expected length being the draft's own unless ``expected_words`` says otherwise (training.length_policies).
    """
    pool = selectable(candidates, findings)
    if not pool:
        return None
    texts = [draft] + [ex.impression.strip() for ex in pool]
    asserted = abnormal(findings)
    expected = (len(draft.split()) if expected_words is None else expected_words) + 1

    def bonus(text: str) -> float:
        length = abs(math.log((len(text.split()) + 1) / expected)) if length_weight else 0.0
        return SELECT_FINDINGS_WEIGHT * findings_agreement(text, asserted) - length_weight * length

    best = most_agreed(texts, [SELECT_DRAFT_WEIGHT] + [ex.similarity or 0.0 for ex in pool], bonus)
    return None if best == 0 or texts[best] == draft else pool[best - 1]  # the same words: the model's own


def selectable(candidates: Sequence[Example], findings: str) -> list[Example]:
    """The candidates ``+select`` may take: a non-empty impression that puts no observation on a side the findings
    never mention (radbridge.verify)."""
    from .verify import laterality_disagreements

    return [ex for ex in candidates if ex.impression.strip() and not laterality_disagreements(ex.impression, findings)]


def findings_agreement(text: str, asserted: frozenset[str]) -> float:
    """F1 between the abnormal observations ``text`` names and those the findings assert (both empty: 1)."""
    named = abnormal(text)
    return 1.0 if not named and not asserted else 2 * len(named & asserted) / (len(named) + len(asserted))


def most_agreed(texts: Sequence[str], weights: Sequence[float], bonus=None) -> int:
    """Minimum-Bayes-risk choice: the index of the text with the highest weighted mean ROUGE-L F1 against the
    others (plus ``bonus(text)`` when given); ties keep the earlier one. ``+select`` and the consensus baseline
    (radbridge.retrieval) both choose this way."""
    weights = [max(0.0, w) for w in weights]
    best, best_utility = 0, float("-inf")
    for a, text in enumerate(texts):
        others = [b for b in range(len(texts)) if b != a]
        total = sum(weights[b] for b in others)
        agreement = sum(weights[b] * _rouge_l_f(texts[b], text) for b in others) / total if total else 0.0
        utility = agreement + (bonus(text) if bonus else 0.0)
        if utility > best_utility + 1e-12:
            best, best_utility = a, utility
    return best


@functools.lru_cache(maxsize=4096)  # bounded: at most 4,096 pairs of texts stay in memory
def _rouge_l_f(reference: str, candidate: str) -> float:
    """ROUGE-L F1, memoised: the same signed impressions meet again and again (stemming dominates the cost)."""
    return _rouge_l().score(reference, candidate)["rougeL"].fmeasure


_SCORER = None


def _rouge_l():
    global _SCORER
    if _SCORER is None:
        from rouge_score import rouge_scorer

        _SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return _SCORER
