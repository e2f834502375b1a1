"""The controls design's config: which teachers, sequences, students and rounds
(`ControlsConfig`, passed whole to `pdjax.designs.controls.run_controls`; the fields every design
shares come from `pdjax.designs.common.DesignConfig`), and the names of its sequences, arms and
contrasts.
"""

from __future__ import annotations

import dataclasses

from pdjax import paper
from pdjax.designs.common import DesignConfig, ModelSpec, distinct_seeds
from pdjax.pruning import PruneSpec
from pdjax.steps import Schedule
from pdjax.types import check

# criterion -> arm name
SEQUENCES = {"magnitude": "magnitude", "none": "dense", "random": "random"}
ARMS = ("scratch", "unpruned", "magnitude", "dense", "random")
CONTRASTS = (("magnitude", "unpruned"), ("magnitude", "dense"), ("magnitude", "random"), ("dense", "unpruned"))


@dataclasses.dataclass(frozen=True)
class ControlsConfig(DesignConfig):
    """The whole design, passed whole (experiments/pruning_controls.py holds its presets); the
    defaults are the paper's VGG19 -> VGG11 on CIFAR-100 (PAPER.md's schedules).

    Attributes (besides `DesignConfig`'s; its `seed` is the validation split's, the same for
    every teacher):
      data: the data source (`pdjax.data.load`).
      teacher, student: the two architectures and widths.
      teacher_train: the teachers' schedule.
      student_scratch, student_distill: the students' schedules from scratch and distilled.
      criteria: the sequences run for every teacher ("magnitude" always among them).
      rounds: the rounds whose teachers are distilled, each in 1..prune.rounds.
      teacher_seeds: one independently trained teacher per seed (its init, data order and the
        random sequence's draws).
      prune: every sequence's rounds, fraction, scope, rewinding and round schedule; its
        `criterion` must stay "magnitude": `criteria` chooses the sequences.
      seeds: student seeds, each paired across every arm.
      margin: the pre-registered equivalence margin of the primary contrast, magnitude - dense
        at the last round of `rounds` (accuracy, e.g. 0.01). With it, the report decides that
        contrast by `pdjax.stats.verdict` (t-test and exact sign-flip test over teachers, TOST
        against +-margin) and adjusts the other contrasts, the secondary ones, by Holm among
        themselves; without it, Holm over every contrast and no decision.
    """

    data: str = "tfds:cifar100"
    teacher: ModelSpec = ModelSpec("vgg19")
    student: ModelSpec = ModelSpec("vgg11")
    teacher_train: Schedule = paper.CIFAR_TRAIN
    student_scratch: Schedule = paper.CIFAR_TRAIN
    student_distill: Schedule = paper.CIFAR_KD
    criteria: tuple[str, ...] = ("magnitude", "none", "random")
    rounds: tuple[int, ...] = (7,)
    teacher_seeds: tuple[int, ...] = (0, 1, 2)
    # The pre-registered equivalence margin of the primary contrast (magnitude - dense at the
    # last of `rounds`), in accuracy (0.01: one point); None: no pre-registered analysis, Holm
    # over every contrast.
    margin: float | None = None
    # DesignConfig's fields with this design's defaults: the paper's pruning, two student seeds.
    prune: PruneSpec = PruneSpec(paper.CIFAR_PRUNE)
    seeds: tuple[int, ...] = (0, 1)

    def __post_init__(self) -> None:
        super().__post_init__()
        checks = [
            (self.prune.criterion == "magnitude", f"prune.criterion={self.prune.criterion!r}: the sequences are "
                                                  "chosen by `criteria` here; leave it 'magnitude'"),
            ("magnitude" in self.criteria and all(c in SEQUENCES for c in self.criteria)
             and len(set(self.criteria)) == len(self.criteria),
             f"criteria={self.criteria}: distinct names among {', '.join(SEQUENCES)}, magnitude included"),
            (bool(self.rounds) and all(1 <= k <= self.prune.rounds for k in self.rounds),
             f"rounds={self.rounds} must lie in 1..prune.rounds ({self.prune.rounds})"),
            (len(set(self.rounds)) == len(self.rounds), f"rounds={self.rounds} must name each round once"),
            (distinct_seeds(self.teacher_seeds), f"teacher_seeds={self.teacher_seeds} must name distinct seeds >= 0"),
            (self.margin is None or 0 < self.margin < 1, f"margin={self.margin} must lie in (0, 1) (accuracy)"),
            (self.margin is None or "none" in self.criteria,
             f"margin={self.margin}: the primary contrast magnitude - dense needs criteria to include 'none'"),
        ]
        check(checks)

    @property
    def primary(self) -> tuple[str, str, int] | None:
        """The pre-registered primary contrast (arm a, arm b, round), where `margin` is set."""
        return None if self.margin is None else ("magnitude", "dense", max(self.rounds))

    @property
    def arms(self) -> tuple[str, ...]:
        """The student arms this config trains, in `ARMS` order."""
        return tuple(a for a in ARMS if a in ("scratch", "unpruned") or a in map(SEQUENCES.get, self.criteria))
