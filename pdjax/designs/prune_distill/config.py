"""What one prune-then-distill run is made of: its config and its students.

`ExperimentConfig` holds the settings every prune-then-distill experiment has (the fields every
design shares come from `pdjax.designs.common.DesignConfig`; the paper's values as defaults)
and is passed whole to `pdjax.designs.prune_distill.prune_then_distill`; an experiment subclasses
it with its own keys. `TwoFamilyConfig` is the config of the experiments with a VGG19 family on
CIFAR-100 and a ResNet18 family on Tiny-ImageNet, each a `Family` of its data and schedules.
`StudentSpec` names one student architecture, its schedules and the arms it is trained in.

Usage:
    config = pdjax.designs.prune_distill.ExperimentConfig(seeds=(0, 1, 2), kd_rounds=(7,),
                                                          prune=pdjax.pruning.PruneSpec(per_round_schedule))
    prune = config.prune_spec()
    student = pdjax.designs.prune_distill.StudentSpec("student", "vgg11", scratch=schedule, distill=schedule)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pdjax import students as students_lib
from pdjax import pruning
from pdjax.designs.common import DesignConfig, count_or_none, distinct_among
from pdjax.paper import CIFAR_KD, CIFAR_PRUNE, CIFAR_TRAIN, TINY_KD, TINY_PRUNE, TINY_TRAIN
from pdjax.steps import Schedule
from pdjax.types import SpecError, check


@dataclasses.dataclass(frozen=True)
class ExperimentConfig(DesignConfig):
    """Fields every prune-then-distill experiment has, beside `DesignConfig`'s (`seed` is also
    the teacher's and its pruning's)."""

    width_multiplier: float = 1.0  # of the teachers (and of fixed-width students)
    kd_rounds: tuple[int, ...] = (2, 4, 7)  # ~36%, 59%, 79% sparsity at 20% per round
    teacher_checkpoint: str | None = None  # a trained teacher (stage dir or saved tree) to use

    def __post_init__(self) -> None:
        super().__post_init__()
        check([
            (self.width_multiplier > 0, f"width_multiplier={self.width_multiplier} must be > 0"),
            (all(1 <= k <= self.prune.rounds for k in self.kd_rounds) and len(set(self.kd_rounds)) == len(self.kd_rounds),
             f"kd_rounds={self.kd_rounds} must lie in 1..prune.rounds ({self.prune.rounds}), each once"),
        ])

    def prune_spec(self, schedule: Schedule | None = None) -> pruning.PruneSpec:
        """`prune`, with each round trained on `schedule` (default: `prune.schedule`; an
        experiment with one pruning schedule per family passes the family's).

        Raises:
          SpecError: neither gives a schedule.
        """
        spec = self.prune if schedule is None else dataclasses.replace(self.prune, schedule=schedule)
        if spec.schedule is None:
            raise SpecError("prune.schedule is not set: give each pruning round's schedule")
        return spec

    def model_options(self) -> dict[str, dict[str, Any]]:
        """Options of `pdjax.models.get` per architecture (see `pdjax.designs.prune_distill.prune_then_distill`); none here."""
        return {}


@dataclasses.dataclass(frozen=True)
class ResNetConfig(ExperimentConfig):
    """An experiment with ResNet18 models, whose stem can be narrowed."""

    # None: the paper's 64-wide ResNet stem at every width; a number narrows it in every ResNet18
    # of the run (CPU scale: at 1/16 width the full stem costs 3/4 of the step)
    resnet_stem_width: int | None = None

    def model_options(self) -> dict[str, dict[str, int]]:
        """Options of `pdjax.models.get` per architecture (see `pdjax.designs.prune_distill.prune_then_distill`)."""
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
      distill: schedule when distilled.
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
    distill: Schedule
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


FAMILIES = ("vgg19", "resnet18")


@dataclasses.dataclass(frozen=True)
class Family:
    """One family of a `TwoFamilyConfig`: its teacher architecture (the family's name), data and
    schedules."""

    name: str
    data: str
    train: Schedule  # the teacher's
    prune: Schedule  # each pruning round's
    distill: Schedule  # the distilled students'
    scratch: Schedule  # the students trained from scratch


@dataclasses.dataclass(frozen=True)
class TwoFamilyConfig(ResNetConfig):
    """A VGG19 family (CIFAR-100 schedules) and a ResNet18 family (Tiny-ImageNet schedules)."""

    families: tuple[str, ...] = FAMILIES
    vgg_data: str = "tfds:cifar100"
    resnet_data: str = "folder:data/tiny-imagenet-200.zip"  # not in the tfds catalogue
    vgg_train: Schedule = CIFAR_TRAIN  # the teacher, and scratch students unless vgg_student is set
    vgg_prune: Schedule = CIFAR_PRUNE
    vgg_distill: Schedule = CIFAR_KD
    vgg_student: Schedule | None = None  # the scratch students' schedule; None: vgg_train
    resnet_train: Schedule = TINY_TRAIN
    resnet_prune: Schedule = TINY_PRUNE
    resnet_distill: Schedule = TINY_KD
    resnet_student: Schedule | None = None  # the scratch students' schedule; None: resnet_train

    def __post_init__(self) -> None:
        super().__post_init__()
        check([(distinct_among(self.families, FAMILIES),
                f"families={self.families} must be distinct names among {', '.join(FAMILIES)}")])

    def data_key(self, name: str) -> str:
        """The field holding a family's data source."""
        return "vgg_data" if name == "vgg19" else "resnet_data"

    def family(self, name: str) -> Family:
        """A family's data and schedules."""
        prefix = "vgg" if name == "vgg19" else "resnet"
        train = getattr(self, f"{prefix}_train")
        scratch = getattr(self, f"{prefix}_student")
        return Family(name, getattr(self, self.data_key(name)), train, getattr(self, f"{prefix}_prune"),
                      getattr(self, f"{prefix}_distill"), scratch if scratch is not None else train)
