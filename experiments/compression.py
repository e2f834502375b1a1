"""The compression scheme (PAPER.md): prune the teacher, derive a student with the teacher's depth
and widths sized from the pruned teacher's per-layer remaining weights, and distill the pruned
teacher into it. Arms: VGG19 on CIFAR-100 and ResNet18 on Tiny-ImageNet.

For each sparsity of `kd_rounds` (36/59/79% at 20% per round) the derived student ("st36", ...)
is trained from scratch, distilled from the unpruned teacher, and distilled from the pruned
teacher it was derived from. The cost table gives each model's parameters, FLOPs and inference
images/s measured in the same run: a masked teacher computes as much as the dense one; the
derived student is what gets faster.

Presets:
  python experiments/compression.py --preset demo    # digits, tiny widths, a few minutes on a CPU
  python experiments/compression.py --preset cpu     # shared CIFAR-10 JPEGs for both arms, 1/8 widths
  python experiments/compression.py --preset paper --set resnet_data=folder:/data/tiny-imagenet-200.zip

Overrides: `--set key=value` (e.g. `--set arms=vgg19`, `--set width_rule=balanced`), `--out DIR`,
`--restart`.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence

import jax

import pdjax
from pdjax.train import Schedule

EXPERIMENT = "compression"
SHARED_CIFAR10 = (Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "cifar10-jpeg.zip").resolve()
ARMS = ("vgg19", "resnet18")

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
    width_multiplier: float = 1.0  # of the teachers
    width_rule: str = "chain"  # "chain" (the paper's) or "balanced" (VGG only)
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
    cost_batch_size: int = 256  # batch of the inference images/s measurement
    vgg_train: Schedule = CIFAR_TRAIN
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
    train = Schedule(epochs=5, batch_size=64, lr=0.05, milestones=(3,), lr_factor=0.2, weight_decay=5e-4)
    prune = Schedule(epochs=2, batch_size=64, lr=0.05, milestones=(1,), lr_factor=0.1, weight_decay=2e-4)
    return Config(vgg_data="digits", resnet_data="digits", width_multiplier=1 / 16, prune_rounds=4,
                  kd_rounds=(2, 4), cost_batch_size=64, vgg_train=train, vgg_prune=prune, vgg_kd=train,
                  resnet_train=train, resnet_prune=prune, resnet_kd=train)


PRESETS = {"paper": paper, "cpu": cpu, "demo": demo}
COST_COLUMNS = [("model", "model", "s"), ("widths", "widths", "s"), ("params", "params", ","),
                ("nonzero_params", "nonzero params", ","), ("flops", "FLOPs / image", ",.0f"),
                ("images_per_second", "inference images/s", ",.0f"), ("test_accuracy", "test acc", ".4f")]


def cost_rows(arm: str, result: pdjax.pipeline.PipelineResult, out: Path, data: pdjax.ImageData,
              config: Config) -> list[dict[str, Any]]:
    """Parameters, FLOPs and measured inference speed of the teacher, its pruned rounds and the
    derived students, all on this machine in this run."""
    teacher_row = next(r for r in result.rows if r["stage"] == "teacher")
    teacher = pdjax.models.get(arm, data.num_classes, widths=teacher_row["widths"])
    template = pdjax.models.init(teacher, jax.random.key(0), data.image_shape)
    rows = []
    dense = pdjax.costs.inference_costs(teacher, template, data.image_shape, batch_size=config.cost_batch_size)
    rows.append({"model": f"{arm} teacher (dense)", "widths": str(teacher_row["widths"]), **dense,
                 "test_accuracy": teacher_row["test_accuracy"]})
    by_round = {r["round"]: r for r in result.pruning}
    for k in config.kd_rounds:
        variables, masks = pdjax.pruning.load_round(out / "pruning", template, round=k)
        pruned = pdjax.costs.inference_costs(
            teacher, variables, data.image_shape, batch_size=config.cost_batch_size,
            nonzero_params=dense["params"] - pdjax.masks.total(masks) + pdjax.masks.remaining(masks))
        rows.append({"model": f"{arm} teacher pruned {by_round[k]['sparsity']:.0%} (masked)",
                     "widths": str(teacher_row["widths"]), **pruned,
                     "test_accuracy": by_round[k]["test_accuracy"]})
    for r in result.students:
        if r["teacher"] == f"{arm} pruned" and r["derived_from_sparsity"] is not None:
            student = pdjax.models.get(arm, data.num_classes, widths=r["widths"])
            variables = pdjax.models.init(student, jax.random.key(0), data.image_shape)
            costs = pdjax.costs.inference_costs(student, variables, data.image_shape,
                                                batch_size=config.cost_batch_size)
            rows.append({"model": f"{arm} student st{round(100 * r['derived_from_sparsity'])} (KD from pruned)",
                         "widths": str(r["widths"]), **costs, "test_accuracy": r["test_accuracy"]})
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    preset, config, out, restart = pdjax.config.parse_args(EXPERIMENT, PRESETS, argv, __doc__)
    unknown = [a for a in config.arms if a not in ARMS]
    if unknown or not config.arms:
        raise pdjax.config.ConfigError(f"arms must be some of {', '.join(ARMS)}, got {config.arms}")
    if config.width_rule not in pdjax.students.RULES:
        raise pdjax.config.ConfigError(f"width_rule must be one of {', '.join(pdjax.students.RULES)}")
    if config.width_rule != "chain" and "resnet18" in config.arms:
        raise pdjax.config.ConfigError(f"width_rule={config.width_rule} is defined for VGG only; "
                                       "use --set arms=vgg19 or width_rule=chain")
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
                                                 width_rule=config.width_rule)],
            kd_rounds=config.kd_rounds, teacher_width_multiplier=config.width_multiplier,
            kd_temperature=config.kd_temperature, kd_alpha=config.kd_alpha, seeds=config.seeds,
            augment=config.augment, eval_batch_size=config.eval_batch_size)
        costs = cost_rows(arm, result, out / arm, data, config)
        notes = (f"Students derived with the `{config.width_rule}` rule. Costs measured on "
                 f"{jax.devices()[0].device_kind} ({jax.default_backend()}), batch {config.cost_batch_size}:\n\n"
                 f"{pdjax.reports.markdown_table(costs, COST_COLUMNS)}\n")
        arm_config = {**run_config, "arm": arm, "config": {**run_config["config"], "data": source}}
        results[arm] = pdjax.runs.write_report(out / arm, result, f"{EXPERIMENT}: {arm}", preset, arm_config,
                                               data, notes, extra={"costs": costs})
    pdjax.runs.write_index(out, EXPERIMENT, preset, results)
    return results


if __name__ == "__main__":
    pdjax.runs.run_cli(main, sys.argv[1:])
