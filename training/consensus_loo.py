"""How well can neighbours word a normal study? Leave-one-out on the training reports, no model.

    python -m training.consensus_loo --train runs/data/train.jsonl [--k 1 5 10 20]

For every training report whose findings assert no abnormal observation (radbridge.prompt.abnormal), the other
training reports are searched with one text representation, and the impression chosen among the k nearest by
similarity-weighted agreement (radbridge.prompt.most_agreed, as ``+select`` and the consensus baseline choose;
k = 1 is plain retrieval) is scored by ROUGE-L F1 against the report's own. Representations: the retriever's word
1-2 gram TF-IDF (radbridge.retrieval), word 1-3 grams, words alone, character 2-5 grams. The training split is
2,281 reports, so this tunes the normal studies' wording on far more than the tune part's 95 and never looks at
valid. Prints one line per representation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from radbridge.prompt import _rouge_l_f, abnormal, most_agreed
from radbridge.retrieval import Retriever


def loo_scores(matrix, rows: list[int], impressions: list[str], ks: tuple[int, ...]) -> dict[int, float]:
    """Mean ROUGE-L of the k-neighbour consensus for each report of ``rows``, itself left out."""
    import numpy as np

    sims = (matrix[rows] @ matrix.T).toarray()
    totals = dict.fromkeys(ks, 0.0)
    for row, i in zip(sims, rows):
        row[i] = -1.0
        order = np.lexsort((np.arange(len(row)), -row))
        for k in ks:
            near = order[:k]
            texts = [impressions[j] for j in near]
            best = most_agreed(texts, [max(0.0, float(row[j])) for j in near]) if k > 1 else 0
            totals[k] += _rouge_l_f(impressions[i], texts[best])
    return {k: total / len(rows) for k, total in totals.items()}


def main(argv: list[str] | None = None) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--k", type=int, nargs="+", default=[1, 5, 10, 20])
    args = ap.parse_args(argv)
    retriever = Retriever.from_jsonl(args.train)
    findings, impressions = retriever.findings, retriever.impressions
    rows = [i for i, f in enumerate(findings) if not abnormal(f)]
    print(f"{len(findings)} training reports, {len(rows)} whose findings assert nothing abnormal")
    representations = {
        "word 1-2 gram TF-IDF (the retriever's)": retriever._matrix,
        "word 1-3 gram TF-IDF": TfidfVectorizer(ngram_range=(1, 3), sublinear_tf=True).fit_transform(findings),
        "word TF-IDF": TfidfVectorizer(ngram_range=(1, 1), sublinear_tf=True).fit_transform(findings),
        "character 2-5 gram TF-IDF": TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5),
                                                     sublinear_tf=True).fit_transform(findings),
    }
    for name, matrix in representations.items():
        scores = loo_scores(matrix, rows, impressions, tuple(args.k))
        print(f"{name:40s} " + "  ".join(f"k={k}: {v:.4f}" for k, v in scores.items()), flush=True)


if __name__ == "__main__":
    main()
