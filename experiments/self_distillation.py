"""Self-distillation (PAPER.md): VGG19 -> VGG19 on CIFAR-100 and ResNet18 -> ResNet18 on
Tiny-ImageNet, each student trained from scratch, distilled from the unpruned teacher, and
distilled from the pruned teacher at each sparsity of `kd_rounds`.

Each arm (`vgg19`, `resnet18`) runs `pdjax.pipeline.prune_then_distill` in its own directory
(`<out>/vgg19/`, `<out>/resnet18/`): teacher, pruning rounds, students; every stage resumable.

Presets:
  python experiments/self_distillation.py --preset demo    # digits, tiny widths, a few minutes on a CPU
  python experiments/self_distillation.py --preset cpu     # shared CIFAR-10 JPEGs for both arms, 1/8 widths
  python experiments/self_distillation.py --preset paper   # CIFAR-100 (tfds) and Tiny-ImageNet (folder)

The paper preset reads Tiny-ImageNet-200 from `--set resnet_data=folder:PATH` (a directory or
.zip in the original layout; tensorflow-datasets does not carry it). Overrides: `--set key=value`,
`--out DIR` (default runs/self_distillation/<preset>), `--restart`, `--set arms=vgg19`.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence

import pdjax
from pdjax.train import Schedule

EXPERIMENT = "self_distillation"
SHARED_CIFAR10 = (Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "cifar10-jpeg.zip").resolve()
ARMS = ("vgg19", "resnet18")

# PAPER.md's schedules.
CIFAR_TRAIN = Schedule(epochs=200, batch_size=128, lr=0.1, milestones=(60, 120, 160), lr_factor=0.2,
                       weight_decay=5e-4)
CIFAR_PRUNE = Schedule(epochs=130, batch_size=128, lr=0.1, milestones=(39, 84), lr_factor=0.1,
                       weight_decay=2e-4)
TINY_TRAIN = Schedule(epochs=100, batch_size=128, lr=0.01, milestones=(30, 60, 80), lr_factor=0.1,
                      weight_decay=1e-4)
TINY_PRUNE = Schedule(epochs=50, batch_size=512, lr=0.04, milestones=(10, 30), lr_factor=0.1,
                      weight_decay=1e-4)
TINY_KD = Schedule(epochs=100, batch_size=256, lr=0.01, milestones=(30, 60, 80), lr_factor=0.2,
                   weight_decay=5e-4)


@dataclasses.dataclass(frozen=True)
class Config:
    arms: tuple[str, ...] = ARMS
    vgg_data: str = "tfds:cifar100"
    resnet_data: str = "folder:data/tiny-imagenet-200.zip"
    width_multiplier: float = 1.0
    seed: int = 0
    seeds: tuple[int, ...] = (0,)
    val_fraction: float = 0.1
    max_train: int | None = None
    max_test: int | None = None
    data_dir: str | None = None
    augment: bool = True
    eval_batch_size: int = 500
    prune_rounds: int = 7
    prune_fraction: float = 0.2
    kd_rounds: tuple[int, ...] = (2, 4, 7)
    kd_temperature: float = 10.0
    kd_alpha: float = 0.95
    vgg_train: Schedule = CIFAR_TRAIN  # teacher and scratch student
    vgg_prune: Schedule = CIFAR_PRUNE
    vgg_kd: Schedule = CIFAR_TRAIN
    resnet_train: Schedule = TINY_TRAIN
    resnet_prune: Schedule = TINY_PRUNE
    resnet_kd: Schedule = TINY_KD


def paper() -> Config:
    return Config()


def cpu() -> Config:
    train = Schedule(epochs=20, batch_size=128, lr=0.1, milestones=(6, 12, 16), lr_factor=0.2,
                     weight_decay=5e-4)
    prune = Schedule(epochs=4, batch_size=128, lr=0.1, milestones=(2, 3), lr_factor=0.1, weight_decay=2e-4)
    return Config(vgg_data=f"folder:{SHARED_CIFAR10}", resnet_data=f"folder:{SHARED_CIFAR10}",
                  width_multiplier=1 / 8, vgg_train=train, vgg_prune=prune, vgg_kd=train,
                  resnet_train=dataclasses.replace(train, lr=0.05), resnet_prune=prune,
                  resnet_kd=dataclasses.replace(train, lr=0.05))


def demo() -> Config:
    train = Schedule(epochs=6, batch_size=64, lr=0.05, milestones=(3, 5), lr_factor=0.2, weight_decay=5e-4)
    prune = Schedule(epochs=2, batch_size=64, lr=0.05, milestones=(1,), lr_factor=0.1, weight_decay=2e-4)
    return Config(vgg_data="digits", resnet_data="digits", width_multiplier=1 / 16, prune_rounds=4,
                  kd_rounds=(2, 4), vgg_train=train, vgg_prune=prune, vgg_kd=train,
                  resnet_train=train, resnet_prune=prune, resnet_kd=train)


PRESETS = {"paper": paper, "cpu": cpu, "demo": demo}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    preset, config, out, restart = pdjax.config.parse_args(EXPERIMENT, PRESETS, argv, __doc__)
    unknown = [a for a in config.arms if a not in ARMS]
    if unknown or not config.arms:
        raise pdjax.config.ConfigError(f"arms must be some of {', '.join(ARMS)}, got {config.arms}")
    if any(not 1 <= k <= config.prune_rounds for k in config.kd_rounds):
        raise pdjax.config.ConfigError(f"kd_rounds {config.kd_rounds} must lie in 1..prune_rounds "
                                       f"({config.prune_rounds})")
    pdjax.parallel.initialize_distributed()
    run_config = {"experiment": EXPERIMENT, "preset": preset, "config": pdjax.config.to_dict(config)}
    out = pdjax.runs.prepare(out, run_config, restart=restart)
    results = {}
    for arm in config.arms:
        source, train, prune, kd = (
            (config.vgg_data, config.vgg_train, config.vgg_prune, config.vgg_kd) if arm == "vgg19" else
            (config.resnet_data, config.resnet_train, config.resnet_prune, config.resnet_kd))
        data = pdjax.data.load(source, val_fraction=config.val_fraction, split_seed=config.seed,
                               max_train=config.max_train, max_test=config.max_test, data_dir=config.data_dir)
        result = pdjax.pipeline.prune_then_distill(
            out=out / arm, data=data, teacher=arm, teacher_schedule=train,
            prune=pdjax.pipeline.PruneSpec(schedule=prune, rounds=config.prune_rounds,
                                           fraction=config.prune_fraction),
            students=[pdjax.pipeline.StudentSpec("student", arm, scratch=train, kd=kd,
                                                 width_multiplier=config.width_multiplier)],
            kd_rounds=config.kd_rounds, teacher_width_multiplier=config.width_multiplier,
            kd_temperature=config.kd_temperature, kd_alpha=config.kd_alpha, seeds=config.seeds,
            augment=config.augment, eval_batch_size=config.eval_batch_size)
        arm_config = {**run_config, "arm": arm, "config": {**run_config["config"], "data": source}}
        results[arm] = pdjax.runs.write_report(out / arm, result, f"{EXPERIMENT}: {arm} -> {arm}", preset,
                                               arm_config, data)
    pdjax.runs.write_index(out, EXPERIMENT, preset, results)
    return results


if __name__ == "__main__":
    pdjax.runs.run_cli(main, sys.argv[1:])
