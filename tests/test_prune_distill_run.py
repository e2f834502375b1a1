"""pdjax.designs.stage: one stage (the whole method runs in the experiments' smoke tests,
test_experiments.py, and resumes after kills in test_crash.py)."""

import chex

from pdjax import steps

from conftest import TINY_VGG11


def test_a_given_trained_model_is_evaluated_not_retrained(small_digits, tmp_path):
    from pdjax.designs import stage

    schedule = steps.Schedule(epochs=1, batch_size=64, lr=0.05)
    widths = TINY_VGG11
    _, first, _ = stage.train_stage("a", model_name="vgg11", data=small_digits, schedule=schedule, out=tmp_path,
                                   seed=0, widths=widths, progress=False)
    _, again, row = stage.train_stage("b", model_name="vgg11", data=small_digits, schedule=schedule, out=tmp_path,
                                     seed=1, widths=widths, progress=False, init_from=tmp_path / "a")
    assert again.history == [] and row["epochs"] == 0
    chex.assert_trees_all_equal(again.best_variables, first.best_variables)
    assert again.test_accuracy == first.test_accuracy
    assert again.val_accuracy == first.val_accuracy
