import math

import pytest

from pdjax import stats


def test_paired_by_hand():
    # Differences 0.02, 0.04, -0.01: mean 0.05/3, sample variance (0.0033^2 + 0.0233^2 + 0.0267^2)/2.
    c = stats.paired([0.70, 0.74, 0.75], [0.68, 0.70, 0.76])
    assert c.differences == pytest.approx((0.02, 0.04, -0.01))
    assert c.mean == pytest.approx(0.05 / 3)
    assert c.std == pytest.approx(math.sqrt(0.0012666667 / 2), rel=1e-6)
    assert (c.wins, c.losses, c.ties) == (2, 1, 0)
    assert c.t == pytest.approx(1.1471, abs=1e-4)
    # With 2 degrees of freedom the two-sided p-value has a closed form: 1 - t / sqrt(2 + t^2).
    assert c.p == pytest.approx(1 - c.t / math.sqrt(2 + c.t ** 2), abs=1e-9)
    assert c.sign_p == pytest.approx(1.0)  # 2 of 3: P(X <= 1 or X >= 2) under Binomial(3, 1/2)
    assert c.verdict.startswith("within the seed-to-seed spread")


def test_paired_clear_win_and_degenerate_cases():
    c = stats.paired([0.80, 0.81, 0.82, 0.83, 0.84], [0.70, 0.70, 0.71, 0.72, 0.72])
    assert (c.wins, c.losses) == (5, 0)
    assert c.sign_p == pytest.approx(2 / 32)  # two-sided: both all-win and all-loss
    assert c.p < 0.001 and c.verdict.startswith("significant")
    same = stats.paired([0.5, 0.6], [0.5, 0.6])
    assert (same.mean, same.std, same.t, same.p, same.ties) == (0.0, 0.0, None, None, 2)
    assert "no measurable difference" in same.verdict
    one = stats.paired([0.6], [0.5])
    assert one.std is None and one.t is None and one.verdict.startswith("one seed")
    with pytest.raises(ValueError, match="same non-zero number"):
        stats.paired([0.1, 0.2], [0.1])


def test_nested_contrast_by_hand():
    # Three teachers, two seeds each. Teacher means 0.008, 0.0175, 0.0015: mean 0.009, their
    # sample sd 0.008046..., SE = sd / sqrt(3), t with 2 df.
    c = stats.nested([[0.012, 0.004], [0.020, 0.015], [-0.003, 0.006]])
    assert c.teacher_means == pytest.approx((0.008, 0.0175, 0.0015))
    assert c.mean == pytest.approx(0.009) and (c.df, c.teachers, c.seeds) == (2, 3, 2)
    sd = math.sqrt(((0.008 - 0.009) ** 2 + (0.0175 - 0.009) ** 2 + (0.0015 - 0.009) ** 2) / 2)
    se = sd / math.sqrt(3)
    t = 0.009 / se
    assert c.p == pytest.approx(1 - t / math.sqrt(2 + t ** 2), abs=1e-9)  # 2 df: closed form
    assert c.high - c.mean == pytest.approx(4.302652729911275 * se, rel=1e-9)  # t_{0.975, 2}
    assert c.mde == pytest.approx((4.302652729911275 + 1.0606601717798212) * se, rel=1e-9)  # + t_{0.8, 2}
    # Variance components: within-teacher variance of the differences, pooled; between teachers
    # what is left of the variance of the means after var_seed / 2.
    var_seed = ((0.012 - 0.004) ** 2 / 2 + (0.020 - 0.015) ** 2 / 2 + (-0.003 - 0.006) ** 2 / 2) / 3
    assert c.var_seed == pytest.approx(var_seed)
    assert c.var_teacher == pytest.approx(sd ** 2 - var_seed / 2)
    assert "3 teachers" in c.method


def test_nested_with_one_teacher_is_a_paired_test_conditional_on_it():
    c = stats.nested([[0.02, 0.04, -0.01]])
    paired = stats.paired([0.70, 0.74, 0.75], [0.68, 0.70, 0.76])
    assert c.mean == pytest.approx(paired.mean) and c.p == pytest.approx(paired.p)
    assert c.var_teacher is None and "conditional on that teacher" in c.method
    lone = stats.nested([[0.01]])
    assert lone.low is None and lone.p is None and lone.mde is None


def test_holm_and_planned_detectable_effect():
    assert stats.holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06], nan_ok=False)
    assert stats.holm([0.5, 0.9]) == [1.0, 1.0]
    # Without teacher-to-teacher spread, 4 teachers x 3 seeds of sd 1.1 points: SE = 1.1 / sqrt(12).
    se = 1.1 / math.sqrt(12)
    assert stats.planned_mde(0.0, 1.1, 4, 3) == pytest.approx((3.182446305284263 + 0.9784723123633045) * se)
    assert stats.planned_mde(1.0, 1.1, 4, 3) > stats.planned_mde(0.0, 1.1, 4, 3)
    with pytest.raises(ValueError, match="at least two teachers"):
        stats.planned_mde(0.0, 1.0, 1, 10)
