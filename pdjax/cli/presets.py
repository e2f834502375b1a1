"""The experiments' shared presets: the CPU-scale settings several experiments share and the
two-family experiments' presets (`pdjax.designs.prune_distill.TwoFamilyConfig`: a VGG19 family on
CIFAR-100 and a ResNet18 family on Tiny-ImageNet)."""

from __future__ import annotations

from typing import Any, TypeVar

from pdjax.designs.prune_distill.config import TwoFamilyConfig
from pdjax.pruning import PruneSpec
from pdjax.steps import Schedule

# The CIFAR-10 JPEGs shared with the project (../shared/datasets/README.md), as a data source
# relative to the repository root, from where experiments are run: no machine's absolute path
# ends up in a committed result.
SHARED_CIFAR10 = "folder:../shared/datasets/cifar10-jpeg.zip"


C = TypeVar("C", bound=TwoFamilyConfig)


# The CPU-scale ResNet18 teacher (1/16 wide, 4-wide stem), its pruning and its students'
# schedule: shared by self_distillation's, compression_scheme's and resnet18_to_vgg16_mobilenetv2's
# `cpu` presets, so their teachers are the same network trained the same way.
CPU_RESNET_WIDTH = 1 / 16
CPU_RESNET_STEM = 4
CPU_RESNET_TRAIN = Schedule(epochs=25, batch_size=128, lr=0.05, milestones=(8, 15, 20), lr_factor=0.2,
                            weight_decay=5e-4)
CPU_RESNET_PRUNE = Schedule(epochs=4, batch_size=128, lr=0.05, milestones=(1, 3), lr_factor=0.1, weight_decay=2e-4)
CPU_RESNET_STUDENT = Schedule(epochs=10, batch_size=128, lr=0.05, milestones=(3, 6, 8), lr_factor=0.2,
                              weight_decay=5e-4)


def two_family_cpu(cls: type[C], **overrides: Any) -> C:
    """Both families at CPU scale: the shared CIFAR-10 JPEGs (all 20,000 training images, 10% held
    out), teachers 1/16 wide, 3 student seeds; `overrides` replace fields (e.g. the students'
    schedules).

    The ResNet18's stem is narrowed with its stages (4 wide): at 1/16 width the paper's 64-wide
    stem at full resolution made the train step 3.7x slower (162 vs 597 img/s, measured side by
    side, batch 128, with another run on the cores). Teachers train longer than students (once,
    against every student arm and seed), so a KD student's gain over scratch mixes the teacher's
    knowledge with its longer training; comparisons between students are at equal budgets. No
    setting was chosen by looking at test accuracy: these are the paper's schedule shapes
    (milestones at 30/60/80% of the epochs, 30/65% in a pruning round) shortened to the budget.
    Uncontended rates: VGG19/16 trains at ~1900-2600 img/s, ResNet18/16 (stem 4) at ~1000.
    """
    vgg = Schedule(epochs=30, batch_size=128, lr=0.1, milestones=(9, 18, 24), lr_factor=0.2, weight_decay=5e-4)
    vgg_student = Schedule(epochs=12, batch_size=128, lr=0.1, milestones=(4, 7, 10), lr_factor=0.2,
                           weight_decay=5e-4)
    fields = dict(vgg_data=SHARED_CIFAR10, resnet_data=SHARED_CIFAR10, width_multiplier=CPU_RESNET_WIDTH,
                  seeds=(0, 1, 2), resnet_stem_width=CPU_RESNET_STEM, vgg_train=vgg, vgg_student=vgg_student,
                  vgg_distill=vgg_student,
                  vgg_prune=Schedule(epochs=5, batch_size=128, lr=0.1, milestones=(2, 3), lr_factor=0.1,
                                     weight_decay=2e-4),
                  resnet_train=CPU_RESNET_TRAIN, resnet_student=CPU_RESNET_STUDENT, resnet_distill=CPU_RESNET_STUDENT,
                  resnet_prune=CPU_RESNET_PRUNE)
    return cls(**{**fields, **overrides})


def two_family_demo(cls: type[C]) -> C:
    """Both families on the embedded digits at 1/16 widths: minutes on a CPU."""
    train = Schedule(epochs=5, batch_size=64, lr=0.05, milestones=(3,), lr_factor=0.2, weight_decay=5e-4)
    prune = Schedule(epochs=2, batch_size=64, lr=0.05, milestones=(1,), lr_factor=0.1, weight_decay=2e-4)
    return cls(vgg_data="digits", resnet_data="digits", width_multiplier=1 / 16, prune=PruneSpec(rounds=4),
               kd_rounds=(2, 4), vgg_train=train, vgg_prune=prune, vgg_distill=train,
               resnet_train=train, resnet_prune=prune, resnet_distill=train)
