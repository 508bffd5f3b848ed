"""OpenI reports -> cleaned train/valid records.

The data is CC BY-NC-ND: it is read from ../shared and derived files go to runs/ (gitignored), never into git.
Cleaning follows XrayGPT (drop reports without findings or impression, findings < 10 words, impression < 2 words).
What to do with ``XXXX`` de-identification tokens and prior-comparison sentences is an option, decided on the
valid split (see docs/model-results.md); the chosen default is recorded in every manifest.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Iterable

from radbridge.samples import OPENI_DIR as OPENI, openi_reports, split_ids
from radbridge.textclean import CleanRules, clean_text, keep_report

REPO = Path(__file__).resolve().parents[1]


def write_jsonl(path: Path, records: Iterable[dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n


def load_split(split: str, openi_dir: Path = OPENI) -> list[dict]:
    """Raw OpenI records of one split of the Trienes et al. 2023 split, filtered by XrayGPT's rule, in id order."""
    ids = split_ids(split, openi_dir)
    by_uid = {r["uid"]: r for r in openi_reports(folder=openi_dir)}
    fields = ("uid", "indication", "comparison", "findings", "impression")
    return [{k: by_uid[i].get(k) or "" for k in fields} for i in ids if i in by_uid and keep_report(by_uid[i])]


# The selection protocol (docs/model-results.md, "Selection protocol"): every choice is made on the tune part of
# valid; a candidate to ship is run once on the confirm part. The part of a report is a function of its id alone
# (not of the file's order or size), so it never moves.
VALID_PARTS = ("tune", "confirm")


def valid_part(uid: object) -> str:
    """``tune`` or ``confirm``: which half of the valid split a report belongs to (by the SHA-256 of its id)."""
    import hashlib

    return VALID_PARTS[hashlib.sha256(f"openi-valid|{uid}".encode()).digest()[0] & 1]


def apply_rules(records: list[dict], rules: CleanRules) -> list[dict]:
    return [
        {**r, "findings": clean_text(r["findings"], rules), "impression": clean_text(r["impression"], rules)}
        for r in records
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write cleaned OpenI train/valid (and valid's tune/confirm parts) JSONL files outside git.")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "data")
    ap.add_argument("--openi", type=Path, default=OPENI)
    args = ap.parse_args(argv)
    for split in ("train", "valid"):
        # Files hold the text as released; CleanRules are applied by whoever reads them (train, retrieval).
        records = load_split(split, args.openi)
        n = write_jsonl(args.out / f"{split}.jsonl", records)
        print(f"{split}: {n} reports -> {args.out / (split + '.jsonl')}")
        if split == "valid":
            for part in VALID_PARTS:
                path = args.out / f"valid-{part}.jsonl"
                n = write_jsonl(path, [r for r in records if valid_part(r["uid"]) == part])
                print(f"valid, {part} part: {n} reports -> {path}")
    print(json.dumps(asdict(CleanRules())))


if __name__ == "__main__":
    main()
