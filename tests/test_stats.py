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


def test_tost_is_two_one_sided_t_tests_and_its_90_percent_interval_inside_the_margin():
    from scipy import stats as scipy_stats

    values = [0.002, -0.004, 0.001, 0.003, 0.006, -0.001]
    m = 0.01
    e = stats.tost(values, m)
    n, mean = len(values), sum(values) / len(values)
    se = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 / n ** 0.5
    assert e.p_lower == pytest.approx(1 - scipy_stats.t.cdf((mean + m) / se, n - 1))
    assert e.p_upper == pytest.approx(scipy_stats.t.cdf((mean - m) / se, n - 1))
    assert e.p == max(e.p_lower, e.p_upper) and e.p < 0.05 and e.df == n - 1
    # Equivalence at 5% <=> the 90% interval inside (-m, m).
    assert -m < e.low < e.high < m
    assert e.high - mean == pytest.approx(scipy_stats.t.ppf(0.95, n - 1) * se)
    wide = stats.tost([0.03, -0.02, 0.01, 0.04], m)  # a spread too wide to show equivalence
    assert wide.p > 0.05 and (wide.low < -m or wide.high > m)
    assert stats.tost([0.001], m).p is None  # one teacher: no test
    with pytest.raises(ValueError, match="margin must be > 0"):
        stats.tost(values, 0)


def test_the_sign_flip_p_value_enumerates_every_sign_assignment():
    import itertools

    values = [0.012, -0.003, 0.02, 0.007, 0.015]
    observed = abs(sum(values))
    count = sum(abs(sum(s * v for s, v in zip(signs, values))) >= observed - 1e-15
                for signs in itertools.product((1, -1), repeat=5))
    assert stats.sign_flip(values) == count / 32
    assert stats.sign_flip([0.01] * 4) == 2 / 16  # 4 teachers: never below 0.125
    assert stats.sign_flip([0.01, 0.02, 0.015, 0.005, 0.012, 0.008, 0.02, 0.011]) == 2 / 256
    assert stats.sign_flip([0.01, -0.01]) == 1.0 and stats.sign_flip([]) is None


def test_the_preregistered_verdict_follows_its_rules():
    helps = stats.nested([[0.02], [0.03], [0.025], [0.015], [0.02], [0.03], [0.022], [0.018]])
    margin = 0.01
    assert stats.verdict(helps, stats.tost(helps.teacher_means, margin), stats.sign_flip(helps.teacher_means)) \
        == "pruning helps"
    hurts = stats.nested([[-d[0]] for d in [[0.02], [0.03], [0.025], [0.015], [0.02], [0.03], [0.022], [0.018]]])
    assert stats.verdict(hurts, stats.tost(hurts.teacher_means, margin), stats.sign_flip(hurts.teacher_means)) \
        == "pruning hurts"
    flat = stats.nested([[0.001], [-0.002], [0.002], [0.0], [-0.001], [0.001], [0.002], [-0.002]])
    assert stats.verdict(flat, stats.tost(flat.teacher_means, margin), stats.sign_flip(flat.teacher_means)) \
        == "equivalent"
    noisy = stats.nested([[0.03], [-0.04], [0.05], [-0.02]])
    assert stats.verdict(noisy, stats.tost(noisy.teacher_means, margin), stats.sign_flip(noisy.teacher_means)) \
        == "inconclusive"
    # A t-test alone is not enough: 4 teachers cannot pass the exact sign-flip test at 5%.
    four = stats.nested([[0.020], [0.021], [0.019], [0.0205]])
    assert four.p < 0.05 and stats.sign_flip(four.teacher_means) == 0.125
    assert stats.verdict(four, stats.tost(four.teacher_means, margin), 0.125) == "inconclusive"
