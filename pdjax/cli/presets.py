"""The experiments' shared presets: the two-arm experiments' config (a VGG19 arm on CIFAR-100 and a
ResNet18 arm on Tiny-ImageNet) and the CPU-scale settings several experiments share."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from pdjax.paper import CIFAR_KD, CIFAR_PRUNE, CIFAR_TRAIN, TINY_KD, TINY_PRUNE, TINY_TRAIN
from pdjax.pruning import PruneSpec
from pdjax.specs import ResNetConfig, distinct_among
from pdjax.train import Schedule
from pdjax.types import check

ARMS = ("vgg19", "resnet18")
# The CIFAR-10 JPEGs shared with the project (../shared/datasets/README.md), as a data source
# relative to the repository root, from where experiments are run: no machine's absolute path
# ends up in a committed result.
SHARED_CIFAR10 = "folder:../shared/datasets/cifar10-jpeg.zip"


@dataclasses.dataclass(frozen=True)
class TwoArmConfig(ResNetConfig):
    """A VGG19 arm (CIFAR-100 schedules) and a ResNet18 arm (Tiny-ImageNet schedules)."""

    arms: tuple[str, ...] = ARMS
    vgg_data: str = "tfds:cifar100"
    resnet_data: str = "folder:data/tiny-imagenet-200.zip"  # not in the tfds catalogue
    vgg_train: Schedule = CIFAR_TRAIN  # the teacher, and scratch students unless vgg_student is set
    vgg_prune: Schedule = CIFAR_PRUNE
    vgg_kd: Schedule = CIFAR_KD
    vgg_student: Schedule | None = None  # the scratch students' schedule; None: vgg_train
    resnet_train: Schedule = TINY_TRAIN
    resnet_prune: Schedule = TINY_PRUNE
    resnet_kd: Schedule = TINY_KD
    resnet_student: Schedule | None = None  # the scratch students' schedule; None: resnet_train

    def __post_init__(self) -> None:
        super().__post_init__()
        check([(distinct_among(self.arms, ARMS), f"arms={self.arms} must be distinct names among {', '.join(ARMS)}")])

    def data_key(self, name: str) -> str:
        """The field holding an arm's data source."""
        return "vgg_data" if name == "vgg19" else "resnet_data"

    def arm(self, name: str) -> tuple[str, Schedule, Schedule, Schedule]:
        """(data source, train, prune, kd schedules) of an arm."""
        source = getattr(self, self.data_key(name))
        if name == "vgg19":
            return source, self.vgg_train, self.vgg_prune, self.vgg_kd
        return source, self.resnet_train, self.resnet_prune, self.resnet_kd

    def student_schedule(self, name: str) -> Schedule:
        """The schedule of an arm's students trained from scratch."""
        student = self.vgg_student if name == "vgg19" else self.resnet_student
        return student if student is not None else self.arm(name)[1]


C = TypeVar("C", bound=TwoArmConfig)


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


def two_arm_cpu(cls: type[C], **overrides: Any) -> C:
    """Both arms at CPU scale: the shared CIFAR-10 JPEGs (all 20,000 training images, 10% held
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
                  vgg_kd=vgg_student,
                  vgg_prune=Schedule(epochs=5, batch_size=128, lr=0.1, milestones=(2, 3), lr_factor=0.1,
                                     weight_decay=2e-4),
                  resnet_train=CPU_RESNET_TRAIN, resnet_student=CPU_RESNET_STUDENT, resnet_kd=CPU_RESNET_STUDENT,
                  resnet_prune=CPU_RESNET_PRUNE)
    return cls(**{**fields, **overrides})


def two_arm_demo(cls: type[C]) -> C:
    """Both arms on the embedded digits at 1/16 widths: minutes on a CPU."""
    train = Schedule(epochs=5, batch_size=64, lr=0.05, milestones=(3,), lr_factor=0.2, weight_decay=5e-4)
    prune = Schedule(epochs=2, batch_size=64, lr=0.05, milestones=(1,), lr_factor=0.1, weight_decay=2e-4)
    return cls(vgg_data="digits", resnet_data="digits", width_multiplier=1 / 16, prune=PruneSpec(rounds=4),
               kd_rounds=(2, 4), vgg_train=train, vgg_prune=prune, vgg_kd=train,
               resnet_train=train, resnet_prune=prune, resnet_kd=train)
