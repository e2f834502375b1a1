"""Tiny-ImageNet (PAPER.md): a ResNet18 teacher distilled into ResNet18 (self-distillation), VGG16
and MobileNetV2 students, each trained from scratch, distilled from the unpruned teacher and
distilled from the pruned teacher at each sparsity of `kd_rounds`.

Stages (each resumable) in the run directory: teacher/, pruning/round_<k>/, and per student
`<student>_scratch/`, `<student>_kd_unpruned/`, `<student>_kd_round_<k>/`.

Presets:
  python experiments/resnet18_to_vgg16_mobilenetv2.py --preset demo    # digits, tiny widths, minutes on a CPU
  python experiments/resnet18_to_vgg16_mobilenetv2.py --preset cpu     # shared CIFAR-10 JPEGs, 1/8 widths
  python experiments/resnet18_to_vgg16_mobilenetv2.py --preset paper \\
      --set data=folder:/data/tiny-imagenet-200.zip                    # the paper's settings

Tiny-ImageNet-200 is read through `folder:` (a directory or .zip in its original layout:
train/<wnid>/images/*, val/val_annotations.txt); tensorflow-datasets does not carry it.
Overrides: `--set key=value` (e.g. `--set students=vgg16_tiny`), `--out DIR`, `--restart`.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Sequence

import pdjax
from pdjax.train import Schedule

EXPERIMENT = "resnet18_to_vgg16_mobilenetv2"
STUDENTS = ("resnet18", "vgg16_tiny", "mobilenetv2")


@dataclasses.dataclass(frozen=True)
class Config(pdjax.presets.ResNetConfig):  # resnet_stem_width narrows the teacher's stem
    data: str = "folder:data/tiny-imagenet-200.zip"
    students: tuple[str, ...] = STUDENTS
    # PAPER.md's Tiny-ImageNet schedules.
    teacher_train: Schedule = pdjax.presets.TINY_TRAIN
    prune: Schedule = pdjax.presets.TINY_PRUNE
    resnet_scratch: Schedule = pdjax.presets.TINY_TRAIN
    vgg_scratch: Schedule = pdjax.presets.TINY_TRAIN
    mobilenet_scratch: Schedule = pdjax.presets.TINY_MOBILENET_TRAIN
    resnet_kd: Schedule = pdjax.presets.TINY_KD
    vgg_kd: Schedule = pdjax.presets.TINY_KD
    mobilenet_kd: Schedule = pdjax.presets.TINY_MOBILENET_KD


def paper() -> Config:
    return Config()


def cpu() -> Config:
    train = Schedule(epochs=15, batch_size=128, lr=0.05, milestones=(5, 10, 13), lr_factor=0.2,
                     weight_decay=5e-4)
    return Config(data=pdjax.presets.SHARED_CIFAR10, width_multiplier=1 / 8, teacher_train=train,
                  prune=Schedule(epochs=4, batch_size=128, lr=0.05, milestones=(2, 3), lr_factor=0.1,
                                 weight_decay=1e-4),
                  resnet_scratch=train, vgg_scratch=train, mobilenet_scratch=train,
                  resnet_kd=train, vgg_kd=train, mobilenet_kd=train)


def demo() -> Config:
    train = Schedule(epochs=5, batch_size=64, lr=0.05, milestones=(3,), lr_factor=0.2, weight_decay=5e-4)
    return Config(data="digits", width_multiplier=1 / 16, prune_rounds=2, kd_rounds=(2,),
                  teacher_train=train,
                  prune=Schedule(epochs=2, batch_size=64, lr=0.05, milestones=(1,), lr_factor=0.1,
                                 weight_decay=1e-4),
                  resnet_scratch=train, vgg_scratch=train, mobilenet_scratch=train,
                  resnet_kd=train, vgg_kd=train, mobilenet_kd=train)


PRESETS = {"paper": paper, "cpu": cpu, "demo": demo}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    preset, config, out, run_config = pdjax.runs.start(EXPERIMENT, PRESETS, argv, __doc__)
    unknown = [s for s in config.students if s not in STUDENTS]
    if unknown or not config.students:
        raise pdjax.config.ConfigError(f"students must be some of {', '.join(STUDENTS)}, got {config.students}")
    data = pdjax.runs.load_data(config, config.data, out)
    schedules = {"resnet18": (config.resnet_scratch, config.resnet_kd),
                 "vgg16_tiny": (config.vgg_scratch, config.vgg_kd),
                 "mobilenetv2": (config.mobilenet_scratch, config.mobilenet_kd)}
    students = [pdjax.pipeline.StudentSpec(name, name, scratch=schedules[name][0], kd=schedules[name][1],
                                           width_multiplier=config.width_multiplier)
                for name in config.students]
    result = pdjax.pipeline.prune_then_distill(
        config, out=out, data=data, teacher="resnet18", teacher_schedule=config.teacher_train,
        prune=pdjax.pipeline.PruneSpec(schedule=config.prune, rounds=config.prune_rounds,
                                       fraction=config.prune_fraction),
        students=students)
    return pdjax.runs.write_report(out, result, EXPERIMENT, preset, run_config, data)


if __name__ == "__main__":
    pdjax.runs.run_cli(main, sys.argv[1:])
