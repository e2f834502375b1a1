"""Self-distillation (PAPER.md): VGG19 -> VGG19 on CIFAR-100 and ResNet18 -> ResNet18 on
Tiny-ImageNet, each student trained from scratch, distilled from the unpruned teacher, and
distilled from the pruned teacher at each sparsity of `kd_rounds`.

Each family (`vgg19`, `resnet18`) runs `pdjax.designs.prune_distill.prune_then_distill` in its own directory
(`<out>/vgg19/`, `<out>/resnet18/`): teacher, pruning rounds, students; every stage resumable.

Presets:
  python experiments/self_distillation.py --preset demo    # digits, tiny widths, a few minutes on a CPU
  python experiments/self_distillation.py --preset cpu     # shared CIFAR-10 JPEGs for both families, 1/16 widths, 3 seeds, ~2.2 h
  python experiments/self_distillation.py --preset paper   # CIFAR-100 (tfds) and Tiny-ImageNet (folder)

The paper preset reads Tiny-ImageNet-200 from `--set resnet_data=folder:PATH` (a directory or
.zip in the original layout; tensorflow-datasets does not carry it). Overrides: `--set key=value`,
`--out DIR` (default runs/self_distillation/<preset>), `--restart`, `--set families=vgg19`.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Sequence

import pdjax
from pdjax.cli import presets, runs

EXPERIMENT = "self_distillation"


@dataclasses.dataclass(frozen=True)
class Config(pdjax.designs.prune_distill.TwoFamilyConfig):
    pass


def paper() -> Config:
    return Config()


def cpu() -> Config:
    # Both families at 1/16 width on the shared CIFAR-10 JPEGs, 3 seeds (`presets.two_family_cpu`),
    # within 2.5 hours on 2 cores: from uncontended rates (VGG19/16 train 1901 img/s, KD ~0.75 of
    # that; ResNet18/16 ~1000 and ~750), VGG family ~50 min, ResNet family ~80 min.
    return presets.two_family_cpu(Config)


def demo() -> Config:
    return presets.two_family_demo(Config)


PRESETS = {"paper": paper, "cpu": cpu, "demo": demo}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    preset, config, out, run_config = runs.start(EXPERIMENT, PRESETS, argv, __doc__)

    def students(name: str) -> list[pdjax.designs.prune_distill.StudentSpec]:
        family = config.family(name)
        return [pdjax.designs.prune_distill.StudentSpec("student", name, scratch=family.scratch, distill=family.distill,
                                                        width_multiplier=config.width_multiplier)]

    return pdjax.designs.prune_distill.run_families(config, out, experiment=EXPERIMENT, preset=preset,
                                                   run_config=run_config, students=students)


if __name__ == "__main__":
    runs.run_cli(main, sys.argv[1:])
