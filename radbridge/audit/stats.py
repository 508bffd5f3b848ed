"""Bootstrap intervals over reports: one sample (an audit's figures) or paired (two systems on the same reports)."""

from __future__ import annotations

import random
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


def _resample(n: int, rng: random.Random) -> list[int]:
    return [rng.randrange(n) for _ in range(n)]


def bootstrap_interval(
    rows: Sequence[T], statistic: Callable[[list[T]], float], *, n: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """statistic(rows), and its 2.5 / 97.5 percentiles over ``n`` resamples of the rows (seeded, deterministic)."""
    if not rows:
        raise ValueError("no rows to bootstrap")
    rng = random.Random(seed)
    rows = list(rows)
    stats = sorted(statistic([rows[i] for i in _resample(len(rows), rng)]) for _ in range(n))
    return statistic(rows), stats[int(0.025 * n)], stats[int(0.975 * n) - 1]


def paired_bootstrap(
    a: Sequence[T], b: Sequence[T], statistic: Callable[[list[T]], float], *, n: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """statistic(A) - statistic(B) on all reports, and the 2.5 / 97.5 percentiles over ``n`` paired resamples."""
    if len(a) != len(b) or not a:
        raise ValueError("both systems must be scored on the same, non-empty list of reports")
    rng = random.Random(seed)
    diffs = []
    for _ in range(n):
        pick = _resample(len(a), rng)
        diffs.append(statistic([a[i] for i in pick]) - statistic([b[i] for i in pick]))
    diffs.sort()
    return statistic(list(a)) - statistic(list(b)), diffs[int(0.025 * n)], diffs[int(0.975 * n) - 1]


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0
