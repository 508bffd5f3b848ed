"""TF-IDF nearest neighbours over signed reports' findings.

One module serves two jobs: the retrieval baseline (answer with the impression of the most similar report)
and retrieval-augmented prompts (show the k most similar reports as ``prompt.Example``), at training,
evaluation and serving time alike. The reports are read at runtime from a JSONL (OpenI train split by
default, or a site's own signed reports); nothing derived from them is stored in the project.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .prompt import Example, most_agreed
from .samples import OPENI_DIR, OPENI_SPLIT, read_jsonl, split_ids
from .textclean import CleanRules, clean_text, keep_report, truncate_words


def default_examples_file() -> Path | None:
    """The OpenI reports in ../shared beside the repository, when present (a site sets its own file)."""
    path = OPENI_DIR / "reports.jsonl"
    return path if path.is_file() else None


class Retriever:
    """Fitted once on a report collection; ``search`` is cosine similarity on word 1-2 gram TF-IDF."""

    def __init__(self, records: Sequence[dict], rules: CleanRules = CleanRules()):
        from sklearn.feature_extraction.text import TfidfVectorizer  # heavy import only when used

        if not records:
            raise ValueError("retrieval needs at least one report")
        self.rules = rules
        self.findings = [clean_text(r["findings"], rules) for r in records]
        self.impressions = [clean_text(r["impression"], rules) for r in records]
        # The examples file's own id of each report (uid), so a draft can say which report it took wording from.
        self.refs = [str(r["uid"]) if r.get("uid") is not None else None for r in records]
        self._vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
        self._matrix = self._vec.fit_transform(self.findings)

    @classmethod
    def from_jsonl(cls, path: str | Path, rules: CleanRules = CleanRules()) -> "Retriever":
        """Reports of a JSONL (fields findings, impression). For the OpenI file, whose split list sits beside
        it, only the train split is used: a validation report must never be shown as its own example."""
        path = Path(path)
        records = read_jsonl(path)
        if (path.parent / OPENI_SPLIT).is_file():
            train = set(split_ids("train", path.parent))
            records = [r for r in records if r.get("uid") in train]
        if all("uid" in r for r in records):
            # Identical findings are common (normal studies): ties go to the lowest index, so fix the order
            # by id and the same reports give the same answers whichever file order they come in.
            records.sort(key=lambda r: r["uid"])
        return cls([r for r in records if keep_report(r)], rules)

    def __len__(self) -> int:
        return len(self.findings)

    def search(self, queries: Sequence[str], k: int = 1, exclude: Sequence[int | None] | None = None) -> list[list[int]]:
        """Indices of the k most similar reports per query, best first; ``exclude[i]`` hides one index
        (at training time, the report itself). Ties break on the lower index, so results are deterministic."""
        return [[j for j, _ in row] for row in self.search_scored(queries, k, exclude)]

    def search_scored(
        self, queries: Sequence[str], k: int = 1, exclude: Sequence[int | None] | None = None
    ) -> list[list[tuple[int, float]]]:
        """``search`` with each hit's cosine similarity (0..1)."""
        import numpy as np

        sims = (self._vec.transform([clean_text(q, self.rules) for q in queries]) @ self._matrix.T).toarray()
        out = []
        for i, row in enumerate(sims):
            if exclude is not None and exclude[i] is not None:
                row[exclude[i]] = -1.0
            order = np.lexsort((np.arange(len(row)), -row))  # by similarity desc, then index asc
            out.append([(int(j), max(0.0, float(row[j]))) for j in order[:k]])
        return out

    def nearest_impressions(self, queries: Sequence[str]) -> list[str]:
        return [self.impressions[idx[0]] for idx in self.search(queries, 1)]

    def consensus_impressions(self, queries: Sequence[str], k: int = 10) -> list[str]:
        """Per query, the impression among the k nearest reports' that agrees most with the others: the one that
        maximises the similarity-weighted mean ROUGE-L F1 against the other k-1 (``prompt.most_agreed``, no model).

        A baseline, not a drafter to ship: on OpenI valid it lifts ROUGE-L over the nearest impression while
        clinical F1 stays flat, because the consensus of near neighbours is usually the boilerplate normal
        sentence (docs/model-results.md).
        """
        out = []
        for hits in self.search_scored(queries, k):
            texts = [self.impressions[j] for j, _ in hits]
            out.append(texts[most_agreed(texts, [sim for _, sim in hits])])  # ties keep the nearer one
        return out

    def examples_for(self, findings: str, k: int) -> list[Example]:
        """The pipeline's ExampleSource port: one report at a time."""
        return self.examples([findings], k)[0]

    def examples(
        self,
        queries: Sequence[str],
        k: int,
        *,
        exclude: Sequence[int | None] | None = None,
        max_findings_words: int | None = None,
    ) -> list[list[Example]]:
        """The k most similar reports as prompt examples, most similar LAST (closest to the question)."""
        if k <= 0:
            return [[] for _ in queries]
        result = []
        for hits in self.search_scored(queries, k, exclude):
            exs = [Example(truncate_words(self.findings[j], max_findings_words), self.impressions[j], round(sim, 2),
                           self.refs[j]) for j, sim in hits]
            result.append(list(reversed(exs)))
        return result


# The name the serving side uses for the same thing (ports.ExampleSource).
ExampleIndex = Retriever
