"""What a run is made of: the experiment config and the student specs (pdjax.specs)."""

import pytest

from pdjax import specs
from pdjax.train import Schedule


def test_a_student_spec_refuses_unknown_arms_and_rules():
    schedule = Schedule(epochs=1, batch_size=8, lr=0.1)
    assert specs.StudentSpec("s", "vgg11", schedule, schedule).arms == ("scratch", "kd_unpruned", "kd_pruned")
    with pytest.raises(ValueError, match=r"arms \('kd',\) must be some of"):
        specs.StudentSpec("s", "vgg11", schedule, schedule, arms=("kd",))
    with pytest.raises(ValueError, match="unknown width rule 'chian'"):
        specs.StudentSpec("s", "vgg11", schedule, schedule, width_rule="chian")


def test_the_config_checks_its_values_and_names_a_pruning_error_by_its_own_key():
    from pdjax.types import SpecError

    with pytest.raises(SpecError, match=r"^kd_alpha=1.5 must lie in \[0, 1\]"):
        specs.ExperimentConfig(kd_alpha=1.5)
    with pytest.raises(SpecError, match=r"^prune_fraction=1.0 must lie in \[0, 1\)"):  # PruneSpec's check
        specs.ExperimentConfig(prune_fraction=1.0)
    schedule = Schedule(epochs=2, batch_size=8, lr=0.1)
    spec = specs.ExperimentConfig(prune_rounds=3, prune_fraction=0.5).prune_spec(schedule)
    assert (spec.schedule, spec.rounds, spec.fraction, spec.rewind) == (schedule, 3, 0.5, "lr")
    # A key this config does not have keeps PruneSpec's default.
    assert not hasattr(specs.ExperimentConfig(), "prune_scope") and spec.scope == "global"
