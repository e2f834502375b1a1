"""What a prune-then-distill run is made of: its config and its student specs
(pdjax.designs.prune_distill.config)."""

import pytest

from pdjax.designs.prune_distill import config as specs
from pdjax.steps import Schedule


def test_a_student_spec_refuses_unknown_arms_and_rules():
    schedule = Schedule(epochs=1, batch_size=8, lr=0.1)
    assert specs.StudentSpec("s", "vgg11", schedule, schedule).arms == ("scratch", "kd_unpruned", "kd_pruned")
    with pytest.raises(ValueError, match=r"arms \('kd',\) must be some of"):
        specs.StudentSpec("s", "vgg11", schedule, schedule, arms=("kd",))
    with pytest.raises(ValueError, match="unknown width rule 'chian'"):
        specs.StudentSpec("s", "vgg11", schedule, schedule, width_rule="chian")


def test_the_config_nests_the_specs_that_check_the_pruning_and_kd_values():
    from pdjax import distill, pruning
    from pdjax.types import SpecError

    with pytest.raises(SpecError, match=r"^prune.fraction=1.0 must lie in \[0, 1\)"):  # PruneSpec's own check
        specs.ExperimentConfig(prune=pruning.PruneSpec(fraction=1.0))
    with pytest.raises(SpecError, match=r"^kd.alpha=1.5 must lie in \[0, 1\]"):  # KDSpec's
        specs.ExperimentConfig(kd=distill.KDSpec(alpha=1.5))
    with pytest.raises(SpecError, match=r"^kd_rounds=\(2, 4\) must lie in 1..prune.rounds \(3\)"):
        specs.ExperimentConfig(prune=pruning.PruneSpec(rounds=3), kd_rounds=(2, 4))
    assert specs.ExperimentConfig().kd == distill.KDSpec(10.0, 0.95)  # PAPER.md's T and alpha
    # prune_spec: the config's pruning with its own schedule, or an arm's.
    schedule, arm = Schedule(epochs=2, batch_size=8, lr=0.1), Schedule(epochs=3, batch_size=8, lr=0.1)
    config = specs.ExperimentConfig(prune=pruning.PruneSpec(schedule, rounds=3, rewind="finetune"), kd_rounds=(3,))
    assert config.prune_spec() == config.prune
    assert config.prune_spec(arm) == pruning.PruneSpec(arm, rounds=3, rewind="finetune")
    with pytest.raises(SpecError, match="prune.schedule is not set"):
        specs.ExperimentConfig().prune_spec()
