"""Paired comparisons over seeds: is one arm better than another, seed by seed?

Arms trained with the same seed share their initialisation and data order (see
`pdjax.pipeline`), so the natural comparison is the per-seed difference. `paired` gives its mean
and standard deviation, the number of seeds the first arm won, a paired t-test and a two-sided
sign test (scipy), and a plain-words verdict.

Usage:
    c = pdjax.stats.paired([0.71, 0.73, 0.72], [0.70, 0.70, 0.71])
    c.mean, c.wins, c.t, c.p, c.verdict
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Sequence


@dataclasses.dataclass(frozen=True)
class Paired:
    """The comparison of arm a with arm b over the same seeds (differences are a - b).

    Attributes:
      differences: a - b, one per seed.
      mean, std: of the differences (std None for one seed).
      wins, losses, ties: seeds where a > b, a < b, a == b.
      t, p: the paired t-statistic and its two-sided p-value (None when undefined: one seed, or
        differences that do not vary).
      sign_p: the two-sided sign test's p-value over the seeds that are not ties.
      verdict: in words, whether the difference exceeds the seed-to-seed spread.
    """

    differences: tuple[float, ...]
    mean: float
    std: float | None
    wins: int
    losses: int
    ties: int
    t: float | None
    p: float | None
    sign_p: float
    verdict: str


def paired(a: Sequence[float], b: Sequence[float], *, level: float = 0.05) -> Paired:
    """Compares arm a with arm b seed by seed (the i-th values share a seed).

    Args:
      a, b: one value per seed each, in the same seed order.
      level: the significance level the verdict uses.

    Returns:
      A `Paired`.
    """
    from scipy import stats as scipy_stats

    if len(a) != len(b) or not a:
        raise ValueError(f"paired comparison needs the same non-zero number of values, got {len(a)} and {len(b)}")
    differences = tuple(float(x) - float(y) for x, y in zip(a, b))
    n = len(differences)
    mean = statistics.fmean(differences)
    std = statistics.stdev(differences) if n > 1 else None
    wins = sum(d > 0 for d in differences)
    losses = sum(d < 0 for d in differences)
    t = p = None
    if std is not None and std > 0:
        t = mean / (std / math.sqrt(n))
        p = float(2 * scipy_stats.t.sf(abs(t), n - 1))
    decided = wins + losses
    sign_p = float(scipy_stats.binomtest(wins, decided).pvalue) if decided else 1.0
    if p is not None and p < level:
        verdict = f"significant (paired t-test p = {p:.3f} < {level})"
    elif std is not None and abs(mean) > std:
        verdict = (f"larger than the seed-to-seed spread of the differences, but not significant "
                   f"with {n} seeds" + (f" (p = {p:.2f})" if p is not None else ""))
    elif std is None:
        verdict = "one seed: no spread to compare with"
    else:
        verdict = "within the seed-to-seed spread: no measurable difference"
    return Paired(differences, mean, std, wins, losses, n - wins - losses, t, p, sign_p, verdict)
