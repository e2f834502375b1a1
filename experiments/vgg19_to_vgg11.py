"""VGG19 -> VGG11 (PAPER.md, CIFAR-100): the teacher and the students of "prune, then distill".

Stages, each in its own directory under the run directory and each resumable (run the same
command again after an interruption):
  teacher/           the VGG19 teacher
  pruning/round_k/   iterative global magnitude pruning of the teacher with learning-rate
                     rewinding, one directory per round (round 2 ~ 36%, 4 ~ 59%, 7 ~ 79% sparse)
  student_scratch/   the VGG11 student trained from scratch (no teacher)
  student_kd_unpruned/     VGG11 distilled from the unpruned teacher
  student_kd_round_<k>/    VGG11 distilled from the pruned teacher of round k (kd_rounds)
The teacher and its pruning rounds are trained once and shared by every student.

Presets:
  python experiments/vgg19_to_vgg11.py --preset demo    # digits, tiny widths: minutes on a CPU
  python experiments/vgg19_to_vgg11.py --preset cpu     # shared CIFAR-10 JPEGs, 1/8 widths, 2 CPU cores
  python experiments/vgg19_to_vgg11.py --preset paper   # CIFAR-100, the paper's widths and epochs

Overrides: `--set key=value` (repeatable; e.g. `--set train.epochs=3`,
`--set data=folder:PATH`), `--out DIR` (default runs/vgg19_to_vgg11/<preset>), `--restart`.
Results in the run directory: `results.md`, `results.json`, `curves.png` (validation accuracy
per epoch), `pruning_density.png` (per-layer density per round), `teacher_vs_sparsity.png`,
`student_vs_teacher_sparsity.png`.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence

import pdjax
from pdjax.train import Schedule

EXPERIMENT = "vgg19_to_vgg11"
SHARED_CIFAR10 = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "cifar10-jpeg.zip"


@dataclasses.dataclass(frozen=True)
class Config(pdjax.presets.ExperimentConfig):
    data: str = "tfds:cifar100"
    teacher: str = "vgg19"
    student: str = "vgg11"
    # Teacher and scratch students (PAPER.md, CIFAR-100 VGG).
    train: Schedule = pdjax.presets.CIFAR_TRAIN
    # Each pruning round (PAPER.md, CIFAR-100 pruning).
    prune: Schedule = pdjax.presets.CIFAR_PRUNE
    prune_scope: str = "global"  # or "layerwise"
    rewind: str = "lr"  # "lr" (the paper), "weight" (to the teacher at rewind_epoch), "finetune"
    rewind_epoch: int = 0  # teacher epoch whose weights rewind="weight" restores
    finetune_lr: float = 1e-3
    # Distillation (PAPER.md, CIFAR-100 KD): students of the unpruned and of these rounds' teachers.
    kd: Schedule = pdjax.presets.CIFAR_KD


def paper() -> Config:
    return Config()


def cpu() -> Config:
    # The paper's schedule shapes (milestones at 30/60/80% and 30/65% of the epochs), shortened.
    train = Schedule(epochs=30, batch_size=128, lr=0.1, milestones=(9, 18, 24), lr_factor=0.2,
                     weight_decay=5e-4)
    return Config(data=f"folder:{SHARED_CIFAR10.resolve()}", width_multiplier=1 / 8, train=train,
                  prune=Schedule(epochs=6, batch_size=128, lr=0.1, milestones=(2, 4),
                                 lr_factor=0.1, weight_decay=2e-4),
                  kd=train)


def demo() -> Config:
    train = Schedule(epochs=12, batch_size=64, lr=0.05, milestones=(6, 9), lr_factor=0.2,
                     weight_decay=5e-4)
    return Config(data="digits", width_multiplier=1 / 16, train=train,
                  prune=Schedule(epochs=3, batch_size=64, lr=0.05, milestones=(1, 2),
                                 lr_factor=0.1, weight_decay=2e-4),
                  kd=train)


PRESETS = {"paper": paper, "cpu": cpu, "demo": demo}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    preset, config, out, run_config = pdjax.runs.start(EXPERIMENT, PRESETS, argv, __doc__)
    data = pdjax.runs.load_data(config, config.data)
    prune = pdjax.pipeline.PruneSpec(
        schedule=config.prune, rounds=config.prune_rounds, fraction=config.prune_fraction,
        scope=config.prune_scope, rewind=config.rewind, rewind_epoch=config.rewind_epoch,
        finetune_lr=config.finetune_lr)
    student = pdjax.pipeline.StudentSpec("student", config.student, scratch=config.train, kd=config.kd,
                                         width_multiplier=config.width_multiplier)
    result = pdjax.pipeline.prune_then_distill(
        out=out, data=data, teacher=config.teacher, teacher_schedule=config.train, prune=prune,
        students=[student], kd_rounds=config.kd_rounds, teacher_width_multiplier=config.width_multiplier,
        kd_temperature=config.kd_temperature, kd_alpha=config.kd_alpha, seeds=config.seeds,
        augment=config.augment, eval_batch_size=config.eval_batch_size,
        compute_dtype=config.compute_dtype, teacher_checkpoint=config.teacher_checkpoint)
    notes = f"KD: T = {config.kd_temperature}, alpha = {config.kd_alpha}.\n\n"
    return pdjax.runs.write_report(out, result, EXPERIMENT, preset, run_config, data, notes)


if __name__ == "__main__":
    pdjax.runs.run_cli(main, sys.argv[1:])
