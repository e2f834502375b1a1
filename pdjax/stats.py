"""Paired comparisons over seeds: is one arm better than another, seed by seed?

Arms trained with the same seed share their initialisation and data order (see
`pdjax.designs.stage`), so the natural comparison is the per-seed difference. `paired` gives its mean
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


@dataclasses.dataclass(frozen=True)
class Nested:
    """A contrast between two arms measured on several teachers, each with several student seeds
    (differences are arm a - arm b, paired by teacher and seed).

    Method: the mean difference of each teacher (over its seeds), then a one-sample t-test and
    t-interval over those teacher means, with teachers - 1 degrees of freedom. For a balanced
    design with teachers as a random effect this is the exact test of a mixed model's fixed
    effect (the teacher-by-arm interaction is its error term), and its variance holds both
    levels: Var(teacher mean) = var_teacher + var_seed / seeds. It needs no variance estimate
    that a handful of teachers cannot give (a mixed model's REML), and is not anticonservative
    with few teachers as a hierarchical bootstrap is. With one teacher it falls back to a paired
    t-test over the student seeds, conditional on that teacher (`method` says so).

    Attributes:
      mean: mean of the differences (of the teacher means: equal for a balanced design).
      low, high: its 95% (1 - level) confidence interval.
      p: two-sided p-value (None when undefined: one difference, or no spread).
      df: degrees of freedom of the test.
      teachers, seeds: number of teachers, and of seeds per teacher (the smallest).
      teacher_means: each teacher's mean difference, in teacher order.
      var_teacher, var_seed: variance components of the difference (one-way random-effects
        ANOVA, var_teacher floored at 0; None where not estimable).
      mde: the smallest true difference this design detects with `power` at `level`
        (two-sided): (t_{1-level/2, df} + t_{power, df}) x the standard error.
      method: how the interval was made, in words.
    """

    mean: float
    low: float | None
    high: float | None
    p: float | None
    df: int
    teachers: int
    seeds: int
    teacher_means: tuple[float, ...]
    var_teacher: float | None
    var_seed: float | None
    mde: float | None
    method: str


def _t_quantile(q: float, df: int) -> float:
    from scipy import stats as scipy_stats

    return float(scipy_stats.t.ppf(q, df))


def detectable(standard_error: float, df: int, *, level: float = 0.05, power: float = 0.8) -> float:
    """The minimum detectable effect of a two-sided t-test: (t_{1-level/2} + t_{power}) x SE."""
    return (_t_quantile(1 - level / 2, df) + _t_quantile(power, df)) * standard_error


def planned_mde(sd_teacher: float, sd_seed: float, teachers: int, seeds: int, *, level: float = 0.05,
                power: float = 0.8) -> float:
    """The minimum detectable effect of `nested` for a planned design: `teachers` teachers with
    `seeds` seeds each, given the spread of the paired difference between teachers
    (`sd_teacher`) and between seeds of one teacher (`sd_seed`)."""
    if teachers < 2:
        raise ValueError("a design over teachers needs at least two teachers")
    se = math.sqrt(sd_teacher ** 2 / teachers + sd_seed ** 2 / (teachers * seeds))
    return detectable(se, teachers - 1, level=level, power=power)


def nested(differences: Sequence[Sequence[float]], *, level: float = 0.05, power: float = 0.8) -> Nested:
    """The contrast of two arms over teachers and their student seeds (see `Nested`).

    Args:
      differences: one sequence per teacher of the per-seed differences a - b.
      level: 1 - the interval's coverage, and the test's level.
      power: for the minimum detectable effect.

    Usage:
        c = pdjax.stats.nested([[0.012, 0.004], [0.020, 0.015], [-0.003, 0.006]])
        c.mean, (c.low, c.high), c.p, c.mde
    """
    from scipy import stats as scipy_stats

    groups = [[float(d) for d in g] for g in differences if len(g)]
    if not groups:
        raise ValueError("a nested contrast needs at least one difference")
    means = tuple(statistics.fmean(g) for g in groups)
    n_teachers, n_seeds = len(groups), min(len(g) for g in groups)
    within = [statistics.variance(g) for g in groups if len(g) > 1]
    var_seed = statistics.fmean(within) if within else None
    if n_teachers > 1:
        values, df = list(means), n_teachers - 1
        method = (f"t-interval over the {n_teachers} teachers' mean differences ({df} df): teacher-to-teacher "
                  "and seed-to-seed variation both in it")
        var_teacher = None
        if var_seed is not None:
            var_teacher = max(0.0, statistics.variance(means) - var_seed / statistics.fmean(len(g) for g in groups))
    else:
        values, df = groups[0], len(groups[0]) - 1
        method = (f"paired t over {len(values)} student seeds of one teacher ({df} df): conditional on that "
                  "teacher, its variation is not in it")
        var_teacher = None
    mean = statistics.fmean(values)
    if df < 1:
        return Nested(mean, None, None, None, df, n_teachers, n_seeds, means, var_teacher, var_seed, None, method)
    se = statistics.stdev(values) / math.sqrt(len(values))
    if se == 0:
        return Nested(mean, mean, mean, None, df, n_teachers, n_seeds, means, var_teacher, var_seed, 0.0, method)
    half = _t_quantile(1 - level / 2, df) * se
    p = float(2 * scipy_stats.t.sf(abs(mean / se), df))
    return Nested(mean, mean - half, mean + half, p, df, n_teachers, n_seeds, means, var_teacher, var_seed,
                  detectable(se, df, level=level, power=power), method)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None stays None and is not counted):
    the k-th smallest of m is multiplied by m - k + 1, then made non-decreasing, capped at 1.
    Rejecting where the adjusted p < level controls the family-wise error rate at that level."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(order)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for k, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - k) * p))
        out[i] = running
    return out


@dataclasses.dataclass(frozen=True)
class Equivalence:
    """Two one-sided tests (TOST) of a mean difference against the margin +-m, over the
    teachers' mean differences (`nested`'s unit): equivalence is shown when both "difference
    <= -m" and "difference >= +m" are rejected at `level`, that is when the 1 - 2 level interval
    lies inside (-m, +m).

    Attributes:
      margin: m.
      p_lower, p_upper: the one-sided p-values against "<= -m" and ">= +m".
      p: max of the two: equivalence at `level` when p < level.
      low, high: the 1 - 2 level (90% at the 5% level) interval.
      df: degrees of freedom.
    """

    margin: float
    p_lower: float | None
    p_upper: float | None
    p: float | None
    low: float | None
    high: float | None
    df: int


def tost(values: Sequence[float], margin: float, *, level: float = 0.05) -> Equivalence:
    """TOST of the mean of `values` (one per teacher) against +-`margin` (see `Equivalence`).

    Usage:
        e = pdjax.stats.tost([0.002, -0.004, 0.001, 0.003], margin=0.01)
        e.p < 0.05   # equivalent within +-1 point
    """
    from scipy import stats as scipy_stats

    if margin <= 0:
        raise ValueError(f"the equivalence margin must be > 0, got {margin}")
    values = [float(v) for v in values]
    df = len(values) - 1
    if df < 1:
        return Equivalence(margin, None, None, None, None, None, df)
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values))
    if se == 0:
        inside = -margin < mean < margin
        p = 0.0 if inside else 1.0
        return Equivalence(margin, p, p, p, mean, mean, df)
    p_lower = float(scipy_stats.t.sf((mean + margin) / se, df))  # H0: difference <= -m
    p_upper = float(scipy_stats.t.cdf((mean - margin) / se, df))  # H0: difference >= +m
    half = _t_quantile(1 - level, df) * se
    return Equivalence(margin, p_lower, p_upper, max(p_lower, p_upper), mean - half, mean + half, df)


def sign_flip(values: Sequence[float]) -> float | None:
    """The exact two-sided sign-flip (permutation) p-value of "the mean of `values` is 0": under
    the null each value's sign is equally likely + or -, so the p-value is the share of the 2^n
    sign assignments whose |mean| is at least the observed |mean|. With n values it cannot go
    below 2 / 2^n (n = 4: 0.125; n = 8: 0.0078). None for no values.

    Usage:
        pdjax.stats.sign_flip([0.01, 0.02, 0.015, 0.005, 0.012, 0.008, 0.02, 0.011])   # 2/256
    """
    import itertools

    values = [float(v) for v in values]
    if not values:
        return None
    observed = abs(sum(values))
    tolerance = 1e-12 * max(1.0, sum(abs(v) for v in values))
    extreme = sum(abs(sum(s * v for s, v in zip(signs, values))) >= observed - tolerance
                  for signs in itertools.product((1, -1), repeat=len(values)))
    return extreme / 2 ** len(values)


VERDICTS = ("pruning helps", "pruning hurts", "equivalent", "inconclusive")


def verdict(contrast: Nested, equivalence: Equivalence, permutation_p: float | None, *,
            level: float = 0.05) -> str:
    """A pre-registered decision on a primary contrast, by rule and no prose:
      - "pruning helps" (or "pruning hurts"): the t-test over teachers and the exact sign-flip
        test both reject 0 at `level`, the mean above (below) 0;
      - "equivalent": otherwise, TOST rejects both "<= -m" and ">= +m" at `level`;
      - "inconclusive": neither.
    One of `VERDICTS`."""
    significant = (contrast.p is not None and contrast.p < level and permutation_p is not None
                   and permutation_p < level)
    if significant:
        return "pruning helps" if contrast.mean > 0 else "pruning hurts"
    if equivalence.p is not None and equivalence.p < level:
        return "equivalent"
    return "inconclusive"
