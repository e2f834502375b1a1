"""What one prune-then-distill run is made of: the experiment's config and its students.

`ExperimentConfig` holds the settings every experiment shares (the paper's values as defaults)
and is passed whole to `pdjax.pipeline.prune_then_distill`; an experiment subclasses it with its
own keys. `StudentSpec` names one student architecture, its schedules and the arms it is trained
in. The config nests the specs that own their values: `prune` (`pdjax.pruning.PruneSpec`) and
`kd` (`pdjax.distill.KDSpec`).

Usage:
    config = pdjax.specs.ExperimentConfig(seeds=(0, 1, 2), kd_rounds=(7,),
                                          prune=pdjax.pruning.PruneSpec(per_round_schedule))
    prune = config.prune_spec()
    student = pdjax.specs.StudentSpec("student", "vgg11", scratch=schedule, kd=schedule)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pdjax import distill, pruning, students as students_lib
from pdjax.models import COMPUTE_DTYPES
from pdjax.tensorboard import LOGS
from pdjax.train import Schedule
from pdjax.types import SpecError, check


def distinct_seeds(seeds: tuple[int, ...]) -> bool:
    """At least one seed, none negative, none twice (a seed names its students' directories)."""
    return bool(seeds) and min(seeds) >= 0 and len(set(seeds)) == len(seeds)


def distinct_among(names: tuple[str, ...], allowed: tuple[str, ...]) -> bool:
    """At least one name, each among `allowed`, none twice."""
    return bool(names) and all(n in allowed for n in names) and len(set(names)) == len(names)


def count_or_none(count: int | None) -> bool:
    """None (no limit) or a count >= 1."""
    return count is None or count >= 1


def shared_checks(config: Any) -> list[tuple[bool, str]]:
    """The checks of the keys every experiment config has, `ExperimentConfig` and
    `pdjax.controls.ControlsConfig` alike: the data split and subsets, the student seeds, the
    compute dtype, the evaluation batch and the log."""
    return [
        (config.compute_dtype in COMPUTE_DTYPES,
         f"compute_dtype={config.compute_dtype!r}: use one of {', '.join(COMPUTE_DTYPES)}"),
        (0 <= config.val_fraction < 1, f"val_fraction={config.val_fraction} must lie in [0, 1)"),
        (config.seed >= 0, f"seed={config.seed} must be >= 0"),
        (distinct_seeds(config.seeds), f"seeds={config.seeds} must name distinct seeds >= 0, at least one"),
        (count_or_none(config.max_train), f"max_train={config.max_train} must be >= 1 (none: every image)"),
        (count_or_none(config.max_test), f"max_test={config.max_test} must be >= 1 (none: every image)"),
        (config.eval_batch_size >= 1, f"eval_batch_size={config.eval_batch_size} must be >= 1"),
        (config.log in LOGS, f"log={config.log!r}: use one of {', '.join(LOGS)}"),
    ]


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Fields every prune-then-distill experiment has (PAPER.md's values as defaults)."""

    width_multiplier: float = 1.0  # of the teachers (and of fixed-width students)
    seed: int = 0  # the validation split, the teacher and the pruning
    seeds: tuple[int, ...] = (0,)  # students are trained once per seed (mean and std reported)
    val_fraction: float = 0.1
    max_train: int | None = None  # training images kept (before the validation hold-out)
    max_test: int | None = None
    data_dir: str | None = None  # tensorflow-datasets data directory
    augment: bool = True
    eval_batch_size: int = 500
    # How the teacher is pruned: rounds, fraction, scope, rewinding (`--set prune.rewind=weight`)
    # and, where the experiment has one, each round's schedule (`prune.schedule.epochs`).
    prune: pruning.PruneSpec = pruning.PruneSpec()
    kd_rounds: tuple[int, ...] = (2, 4, 7)  # ~36%, 59%, 79% sparsity at 20% per round
    kd: distill.KDSpec = distill.KDSpec()  # the KD loss's T and alpha (`--set kd.temperature=4`)
    compute_dtype: str = "float32"  # "bfloat16": mixed precision (parameters stay float32)
    teacher_checkpoint: str | None = None  # a trained teacher (stage dir or saved tree) to use
    log: str = "none"  # "tensorboard": live curves of every stage under <run dir>/tensorboard/

    def __post_init__(self) -> None:
        # `prune` and `kd` checked their own values when they were built.
        check([
            (self.width_multiplier > 0, f"width_multiplier={self.width_multiplier} must be > 0"),
            *shared_checks(self),
            (all(1 <= k <= self.prune.rounds for k in self.kd_rounds) and len(set(self.kd_rounds)) == len(self.kd_rounds),
             f"kd_rounds={self.kd_rounds} must lie in 1..prune.rounds ({self.prune.rounds}), each once"),
        ])

    def prune_spec(self, schedule: Schedule | None = None) -> pruning.PruneSpec:
        """`prune`, with each round trained on `schedule` (default: `prune.schedule`; an
        experiment with one pruning schedule per arm passes the arm's).

        Raises:
          SpecError: neither gives a schedule.
        """
        spec = self.prune if schedule is None else dataclasses.replace(self.prune, schedule=schedule)
        if spec.schedule is None:
            raise SpecError("prune.schedule is not set: give each pruning round's schedule")
        return spec

    def model_options(self) -> dict[str, dict[str, Any]]:
        """Options of `pdjax.models.get` per architecture (see `prune_then_distill`); none here."""
        return {}


@dataclasses.dataclass(frozen=True)
class ResNetConfig(ExperimentConfig):
    """An experiment with ResNet18 models, whose stem can be narrowed."""

    # None: the paper's 64-wide ResNet stem at every width; a number narrows it in every ResNet18
    # of the run (CPU scale: at 1/16 width the full stem costs 3/4 of the step)
    resnet_stem_width: int | None = None

    def model_options(self) -> dict[str, dict[str, int]]:
        """Options of `pdjax.models.get` per architecture (see `prune_then_distill`)."""
        return {} if self.resnet_stem_width is None else {"resnet18": {"stem_width": self.resnet_stem_width}}

    def __post_init__(self) -> None:
        super().__post_init__()
        check([(count_or_none(self.resnet_stem_width),
                f"resnet_stem_width={self.resnet_stem_width} must be >= 1 (none: the paper's 64)")])


STUDENT_ARMS = ("scratch", "kd_unpruned", "kd_pruned")


@dataclasses.dataclass(frozen=True)
class StudentSpec:
    """One student architecture and its schedules.

    Attributes:
      label: prefix of its stage directories ("student" -> student_scratch/, ...).
      model: its architecture name.
      scratch: schedule when trained from scratch.
      kd: schedule when distilled.
      width_rule: None for the model's own widths times `width_multiplier`; "chain",
        "balanced" or "uniform" to derive the widths from each pruned teacher's masks (see
        `pdjax.students`).
      width_multiplier: scales the fixed widths.
      arms: which of its arms are trained: "scratch", "kd_unpruned" (distilled from the unpruned
        teacher), "kd_pruned" (from each pruned teacher of `kd_rounds`); all three by default.
    """

    label: str
    model: str
    scratch: Schedule
    kd: Schedule
    width_rule: str | None = None
    width_multiplier: float = 1.0
    arms: tuple[str, ...] = STUDENT_ARMS

    def __post_init__(self) -> None:
        unknown = [a for a in self.arms if a not in STUDENT_ARMS]
        if unknown or not self.arms:
            raise ValueError(f"student {self.label!r}: arms {self.arms} must be some of {STUDENT_ARMS}")
        if self.width_rule is not None and self.width_rule not in students_lib.RULES:
            raise ValueError(f"student {self.label!r}: unknown width rule {self.width_rule!r}; "
                             f"known: {', '.join(students_lib.RULES)}")
