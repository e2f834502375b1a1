"""Is it the pruning, or the extra training? Students of magnitude-pruned teachers against
students of the same teachers retrained exactly as long without pruning (dense rewinding) and
pruned at random positions with magnitude pruning's per-layer counts (`pdjax.controls`).

Several independently trained teachers (`teacher_seeds`), each with its three sequences;
students from scratch, from each unpruned teacher and from each sequence's round-k teacher
(`rounds`), every student seed paired across the arms. The report leads with the answer
(magnitude - dense) and gives each contrast with a two-level 95% interval (teachers, then
seeds), its Holm-corrected p-value and the effect this design can detect.

Presets (one family each):
  python experiments/pruning_controls.py --preset demo        # digits, tiny widths: minutes on a CPU
  python experiments/pruning_controls.py --preset cpu         # VGG19/8 -> VGG11/16, shared CIFAR-10 JPEGs
  python experiments/pruning_controls.py --preset cpu_resnet  # ResNet18/16 -> VGG16-tiny/8, same data
  python experiments/pruning_controls.py --preset paper       # VGG19 -> VGG11, CIFAR-100, PAPER.md's schedules
  python experiments/pruning_controls.py --preset paper_resnet --set data=folder:/data/tiny-imagenet-200.zip

Overrides: `--set key=value` on any nested key (`--set teacher_seeds=0,1,2,3`,
`--set prune.rewind=weight`, `--set student_kd.epochs=30`, `--set kd.temperature=4`),
`--out DIR` (default runs/pruning_controls/<preset>), `--restart`. Results in the run
directory: results.md, results.json, controls.png, curves.png.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

import pdjax
from pdjax.controls import ControlsConfig, ModelSpec
from pdjax.distill import KDSpec
from pdjax.pruning import PruneSpec
from pdjax.train import Schedule

EXPERIMENT = "pruning_controls"


def paper() -> ControlsConfig:
    return ControlsConfig()


def paper_resnet() -> ControlsConfig:
    p = pdjax.presets
    return ControlsConfig(data="folder:data/tiny-imagenet-200.zip", teacher=ModelSpec("resnet18"),
                          student=ModelSpec("vgg16_tiny"), teacher_train=p.TINY_TRAIN, student_scratch=p.TINY_TRAIN,
                          student_kd=p.TINY_KD, prune=PruneSpec(p.TINY_PRUNE))


def _shaped(epochs: int, lr: float) -> Schedule:
    """A CPU-scale schedule with PAPER.md's shape: milestones at 30/60/80% of the epochs, x 0.2."""
    return Schedule(epochs=epochs, batch_size=128, lr=lr, milestones=tuple(round(epochs * f) for f in (0.3, 0.6, 0.8)),
                    lr_factor=0.2, weight_decay=5e-4)


def cpu() -> ControlsConfig:
    # VGG19 -> VGG11 at the vgg19_to_vgg11 cpu preset's widths and teacher schedule (teacher
    # 1/8, student 1/16, 30 teacher epochs). The student schedule and the numbers of teachers
    # and seeds: results/pruning_controls_cpu/README.md ("Design") gives the probe and the budget.
    return ControlsConfig(
        data=pdjax.presets.SHARED_CIFAR10, teacher=ModelSpec("vgg19", 1 / 8), student=ModelSpec("vgg11", 1 / 16),
        teacher_train=_shaped(30, 0.1), student_scratch=_shaped(20, 0.1), student_kd=_shaped(20, 0.1),
        prune=PruneSpec(Schedule(epochs=4, batch_size=128, lr=0.1, milestones=(1, 3), lr_factor=0.1,
                                 weight_decay=2e-4)),
        rounds=(7,), teacher_seeds=(0, 1, 2, 3), seeds=(0, 1, 2))


def cpu_resnet() -> ControlsConfig:
    # ResNet18 -> VGG16-tiny at the resnet18_to_vgg16_mobilenetv2 cpu preset's widths and teacher
    # (ResNet18 1/16 with a 4-wide stem, 25 epochs, rounds of 4 epochs; VGG16-tiny 1/8).
    p = pdjax.presets
    return ControlsConfig(
        data=p.SHARED_CIFAR10, teacher=ModelSpec("resnet18", p.CPU_RESNET_WIDTH, p.CPU_RESNET_STEM),
        student=ModelSpec("vgg16_tiny", 1 / 8), teacher_train=p.CPU_RESNET_TRAIN,
        student_scratch=_shaped(10, 0.05), student_kd=_shaped(10, 0.05), prune=PruneSpec(p.CPU_RESNET_PRUNE),
        rounds=(7,), teacher_seeds=(0, 1, 2, 3), seeds=(0, 1, 2))


def demo() -> ControlsConfig:
    train = Schedule(epochs=4, batch_size=64, lr=0.05, milestones=(2, 3), lr_factor=0.2, weight_decay=5e-4)
    return ControlsConfig(
        data="digits", teacher=ModelSpec("vgg11", 1 / 16), student=ModelSpec("vgg11", 1 / 32), teacher_train=train,
        student_scratch=train, student_kd=train,
        prune=PruneSpec(Schedule(epochs=1, batch_size=64, lr=0.05, lr_factor=0.1, weight_decay=2e-4), rounds=2),
        kd=KDSpec(), rounds=(2,), teacher_seeds=(0, 1), seeds=(0, 1))


PRESETS = {"paper": paper, "paper_resnet": paper_resnet, "cpu": cpu, "cpu_resnet": cpu_resnet, "demo": demo}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    preset, config, out, run_config = pdjax.runs.start(EXPERIMENT, PRESETS, argv, __doc__)
    data = pdjax.runs.load_data(config, config.data, out)
    result = pdjax.controls.run(config, out=out, data=data)
    return pdjax.runs.write_controls_report(out, result, EXPERIMENT, preset, run_config, data)


if __name__ == "__main__":
    pdjax.runs.run_cli(main, sys.argv[1:])
