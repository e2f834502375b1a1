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


def test_the_kd_values_are_checked_by_the_kd_spec_and_named_by_the_configs_keys():
    from pdjax.distill import KDSpec
    from pdjax.types import SpecError

    assert specs.ExperimentConfig().kd_spec() == KDSpec(10.0, 0.95)  # PAPER.md's T and alpha
    assert specs.ExperimentConfig(kd_temperature=4.0, kd_alpha=0.9).kd_spec() == KDSpec(4.0, 0.9)
    with pytest.raises(SpecError, match=r"^kd_temperature=0.0 must be > 0$"):
        specs.ExperimentConfig(kd_temperature=0.0)
