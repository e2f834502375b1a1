"""The run's records and the seed-by-seed comparisons of its student arms (pdjax.designs.prune_distill.results)."""

import dataclasses

import pytest

from pdjax.designs.prune_distill import results


def _row(teacher_model, teacher_round, sparsity, accuracies):
    arm = "scratch" if teacher_model is None else "kd_unpruned" if teacher_round == 0 else "kd_pruned"
    return results.StudentRow(
        student="student", model="vgg11", widths=(4, 8), width_rule=None, derived_round=None,
        derived_from_sparsity=None, arm=arm, teacher_model=teacher_model, teacher_round=teacher_round,
        teacher_sparsity=sparsity, teacher_test_accuracy=None, student_params=1,
        test_accuracies=tuple(accuracies), seeds=(0, 1))


def test_comparisons_pair_pruned_with_unpruned_of_the_same_teacher_and_kd_with_scratch():
    result = results.PipelineResult(teachers=[], rows=[], curves={}, students=[
        _row(None, None, None, [0.60, 0.62]),
        _row("vgg19", 0, 0.0, [0.61, 0.60]),
        _row("vgg19", 2, 0.36, [0.65, 0.63]),
        _row("vgg19_dbl", 0, 0.0, [0.70, 0.70]),
        _row("vgg19_dbl", 4, 0.59, [0.69, 0.72]),
    ])
    rows = {(r["arm"], r["baseline"]): r for r in results.comparisons(result)}
    assert set(rows) == {
        ("KD from vgg19 unpruned", "scratch"), ("KD from vgg19 pruned 36%", "KD from vgg19 unpruned"),
        ("KD from vgg19 pruned 36%", "scratch"), ("KD from vgg19_dbl unpruned", "scratch"),
        ("KD from vgg19_dbl pruned 59%", "KD from vgg19_dbl unpruned"), ("KD from vgg19_dbl pruned 59%", "scratch")}
    pruned = rows[("KD from vgg19 pruned 36%", "KD from vgg19 unpruned")]
    assert pruned["differences"] == pytest.approx([0.04, 0.03])
    assert pruned["mean"] == pytest.approx(0.035) and pruned["record"] == "2/0/0"
    dbl = rows[("KD from vgg19_dbl pruned 59%", "KD from vgg19_dbl unpruned")]
    assert dbl["differences"] == pytest.approx([-0.01, 0.02]) and dbl["record"] == "1/1/0"
    assert rows[("KD from vgg19 unpruned", "scratch")]["differences"] == pytest.approx([0.01, -0.02])
    # The same comparisons are in results.json.
    assert result.to_json()["comparisons"] == results.comparisons(result)


def test_comparisons_pair_each_width_rule_with_the_chain_student_of_the_same_arm():
    def derived(rule, widths, teacher_round, accuracies):
        row = _row(None if teacher_round is None else "vgg19", teacher_round, None if teacher_round is None else 0.36,
                   accuracies)
        return dataclasses.replace(row, model="vgg19", widths=widths, width_rule=rule, derived_round=2,
                                   derived_from_sparsity=0.36, student=f"{rule}_student")

    result = results.PipelineResult(teachers=[], rows=[], curves={}, students=[
        derived("chain", (3, 5), None, [0.50, 0.52]), derived("chain", (3, 5), 2, [0.55, 0.56]),
        derived("uniform", (4, 4), None, [0.49, 0.50]), derived("uniform", (4, 4), 2, [0.56, 0.58]),
    ])
    rows = {(r["student"], r["arm"], r["baseline"]): r for r in results.comparisons(result)}
    chain = "vgg19 chain st36 (3, 5)"
    assert set(rows) == {
        (chain, "KD from vgg19 pruned 36%", "scratch"),
        ("vgg19 uniform st36 (4, 4)", "KD from vgg19 pruned 36%", "scratch"),
        ("vgg19 uniform st36 (4, 4)", "scratch", f"{chain}, same arm"),
        ("vgg19 uniform st36 (4, 4)", "KD from vgg19 pruned 36%", f"{chain}, same arm")}
    assert rows[("vgg19 uniform st36 (4, 4)", "KD from vgg19 pruned 36%", f"{chain}, same arm")][
        "differences"] == pytest.approx([0.01, 0.02])
