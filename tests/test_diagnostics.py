"""What a teacher transfers, measured (pdjax.diagnostics): each function on literal logits."""

import numpy as np
import pytest

from pdjax import diagnostics


def test_agreement_and_accuracy_count_argmaxes():
    s = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [5.0, 0.0, 0.0], [0.0, 2.0, 1.0]])
    t = np.array([[1.0, 0.0, 0.0], [0.0, 4.0, 1.0], [9.0, 0.0, 1.0], [0.0, 0.0, 7.0]])
    assert diagnostics.agreement(s, t) == 0.5  # images 0 and 2 agree
    assert diagnostics.accuracy(s, [0, 2, 1, 1]) == 0.75
    with pytest.raises(ValueError, match="differ in shape"):
        diagnostics.agreement(s, t[:, :2])


def test_kl_and_entropy_by_hand():
    # Teacher (0, 0): p = (1/2, 1/2); student (ln 3, 0): q = (3/4, 1/4).
    # KL(p || q) = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3).
    assert diagnostics.kl([[0.0, 0.0]], [[np.log(3.0), 0.0]]) == pytest.approx(0.5 * np.log(4 / 3))
    # At T = 2 the student's logits halve: q = (sqrt3, 1) / (sqrt3 + 1).
    q = np.array([np.sqrt(3), 1.0]) / (np.sqrt(3) + 1)
    assert diagnostics.kl([[0.0, 0.0]], [[np.log(3.0), 0.0]], temperature=2.0) == pytest.approx(
        np.sum(0.5 * np.log(0.5 / q)))
    assert diagnostics.kl([[1.0, 2.0, 3.0]], [[1.0, 2.0, 3.0]]) == pytest.approx(0.0, abs=1e-12)
    # Uniform soft labels carry ln K nats; a confident teacher's, at T = 1, almost none.
    assert diagnostics.soft_label_entropy(np.zeros((3, 10)), 4.0) == pytest.approx(np.log(10))
    assert diagnostics.soft_label_entropy([[30.0, 0.0, 0.0]], 1.0) < 1e-10
    # A higher temperature softens: more entropy.
    t = [[3.0, 1.0, 0.0]]
    assert diagnostics.soft_label_entropy(t, 4.0) > diagnostics.soft_label_entropy(t, 1.0)


def test_nll_is_the_mean_cross_entropy():
    logits = np.array([[np.log(3.0), 0.0], [0.0, 0.0]])
    # -ln(3/4) for the first (label 0), -ln(1/2) for the second.
    assert diagnostics.nll(logits, [0, 1]) == pytest.approx((-np.log(0.75) - np.log(0.5)) / 2)


def test_ece_bins_confidence_into_15_equal_width_bins():
    # Four images with top probabilities 0.9, 0.9 (one right, one wrong) and 0.6, 0.6 (both right):
    # bin (0.867, 0.933]: acc 0.5, conf 0.9; bin (0.533, 0.6]: acc 1, conf 0.6.
    # ECE = 1/2 |0.5 - 0.9| + 1/2 |1 - 0.6| = 0.4.
    def logits(p):
        return [np.log(p), np.log(1 - p)]

    x = np.array([logits(0.9), logits(0.9), logits(0.6), logits(0.6)])
    assert diagnostics.expected_calibration_error(x, [0, 1, 0, 0]) == pytest.approx(0.4)
    # A model whose confidence equals its accuracy in every bin is calibrated: 0.
    y = np.array([logits(0.75)] * 4)
    assert diagnostics.expected_calibration_error(y, [0, 0, 0, 1]) == pytest.approx(0.0, abs=1e-12)
    # 0.58 and 0.62 fall in different bins ((8/15, 9/15] and (9/15, 10/15]): 0.29 + 0.19; in
    # one bin they would give |0.5 - 0.6| = 0.1.
    z = np.array([logits(0.58), logits(0.62)])
    assert diagnostics.expected_calibration_error(z, [1, 0]) == pytest.approx(0.5 * 0.58 + 0.5 * 0.38)


def test_summaries_group_the_measures():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(50, 10)), rng.normal(size=(50, 10)) * 3
    y = rng.integers(0, 10, 50)
    teacher = diagnostics.teacher_summary(t, y, 4.0)
    student = diagnostics.student_summary(s, t, y)
    assert set(teacher) == {"accuracy", "ece", "nll", "entropy"} and teacher["entropy"] == diagnostics.soft_label_entropy(t, 4.0)
    assert student["agreement"] == diagnostics.agreement(s, t) and student["kl"] == diagnostics.kl(t, s)
