"""Self-distillation (PAPER.md): VGG19 -> VGG19 on CIFAR-100 and ResNet18 -> ResNet18 on
Tiny-ImageNet, each student trained from scratch, distilled from the unpruned teacher, and
distilled from the pruned teacher at each sparsity of `kd_rounds`.

Each arm (`vgg19`, `resnet18`) runs `pdjax.pipeline.prune_then_distill` in its own directory
(`<out>/vgg19/`, `<out>/resnet18/`): teacher, pruning rounds, students; every stage resumable.

Presets:
  python experiments/self_distillation.py --preset demo    # digits, tiny widths, a few minutes on a CPU
  python experiments/self_distillation.py --preset cpu     # shared CIFAR-10 JPEGs for both arms, 1/16 widths, 3 seeds, ~2.2 h
  python experiments/self_distillation.py --preset paper   # CIFAR-100 (tfds) and Tiny-ImageNet (folder)

The paper preset reads Tiny-ImageNet-200 from `--set resnet_data=folder:PATH` (a directory or
.zip in the original layout; tensorflow-datasets does not carry it). Overrides: `--set key=value`,
`--out DIR` (default runs/self_distillation/<preset>), `--restart`, `--set arms=vgg19`.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Sequence

import pdjax
from pdjax.cli import presets, runs

EXPERIMENT = "self_distillation"


@dataclasses.dataclass(frozen=True)
class Config(presets.TwoArmConfig):
    pass


def paper() -> Config:
    return Config()


def cpu() -> Config:
    # Both arms at 1/16 width on the shared CIFAR-10 JPEGs, 3 seeds (`presets.two_arm_cpu`),
    # within 2.5 hours on 2 cores: from uncontended rates (VGG19/16 train 1901 img/s, KD ~0.75 of
    # that; ResNet18/16 ~1000 and ~750), VGG arm ~50 min, ResNet arm ~80 min.
    return presets.two_arm_cpu(Config)


def demo() -> Config:
    return presets.two_arm_demo(Config)


PRESETS = {"paper": paper, "cpu": cpu, "demo": demo}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    preset, config, out, run_config = runs.start(EXPERIMENT, PRESETS, argv, __doc__)

    def students(arm: str) -> list[pdjax.specs.StudentSpec]:
        _, _, _, kd = config.arm(arm)
        return [pdjax.specs.StudentSpec("student", arm, scratch=config.student_schedule(arm), kd=kd,
                                           width_multiplier=config.width_multiplier)]

    return runs.run_arms(config, out, EXPERIMENT, preset, run_config, students)


if __name__ == "__main__":
    runs.run_cli(main, sys.argv[1:])
