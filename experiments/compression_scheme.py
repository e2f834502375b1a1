"""The compression scheme (PAPER.md): prune the teacher, derive a student with the teacher's depth
and widths sized from the pruned teacher's per-layer remaining weights, and distill the pruned
teacher into it. Arms: VGG19 on CIFAR-100 and ResNet18 on Tiny-ImageNet.

For each sparsity of `kd_rounds` (36/59/79% at 20% per round) the derived student ("st36", ...)
is trained from scratch, distilled from the unpruned teacher, and distilled from the pruned
teacher it was derived from. The cost table gives each model's parameters, FLOPs and inference
images/s measured in the same run: a masked teacher computes as much as the dense one; the
derived student is what gets faster.

Presets:
  python experiments/compression_scheme.py --preset demo    # digits, tiny widths, a few minutes on a CPU
  python experiments/compression_scheme.py --preset cpu     # shared CIFAR-10 JPEGs for both arms, 1/8 widths
  python experiments/compression_scheme.py --preset paper --set resnet_data=folder:/data/tiny-imagenet-200.zip

Overrides: `--set key=value` (e.g. `--set arms=vgg19`, `--set width_rule=balanced`), `--out DIR`,
`--restart`.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Sequence

import jax

import pdjax

EXPERIMENT = "compression_scheme"


@dataclasses.dataclass(frozen=True)
class Config(pdjax.presets.TwoArmConfig):
    width_rule: str = "chain"  # "chain" (the paper's) or "balanced" (VGG only)
    cost_batch_size: int = 256  # batch of the inference images/s measurement


def paper() -> Config:
    return Config()


def cpu() -> Config:
    return pdjax.presets.two_arm_cpu(Config)


def demo() -> Config:
    return dataclasses.replace(pdjax.presets.two_arm_demo(Config), cost_batch_size=64)


PRESETS = {"paper": paper, "cpu": cpu, "demo": demo}
COST_COLUMNS = [("model", "model", "s"), ("widths", "widths", "s"), ("params", "params", ","),
                ("nonzero_params", "nonzero params", ","), ("flops", "FLOPs / image", ",.0f"),
                ("images_per_second", "inference images/s", ",.0f"), ("test_accuracy", "test acc", ".4f")]


def cost_rows(arm: str, result: pdjax.pipeline.PipelineResult, data: pdjax.ImageData,
              config: Config) -> list[dict[str, Any]]:
    """Parameters, FLOPs and measured inference speed of the teacher, its pruned rounds and the
    derived students, all on this machine in this run. Costs do not depend on the weights' values,
    so freshly initialised variables (with each round's masks applied) stand in for trained ones."""
    (taught,) = result.teachers
    teacher_row = next(r for r in result.rows if r["stage"] == taught.stage)
    teacher = pdjax.models.get(arm, data.num_classes, widths=teacher_row["widths"])
    template = pdjax.models.init(teacher, jax.random.key(0), data.image_shape)
    rows = []
    dense = pdjax.costs.inference_costs(teacher, template, data.image_shape, batch_size=config.cost_batch_size)
    rows.append({"model": f"{arm} teacher (dense)", "widths": str(teacher_row["widths"]), **dense,
                 "test_accuracy": teacher_row["test_accuracy"]})
    for k in config.kd_rounds:
        masks, summary = taught.masks[k], taught.pruning[k]  # index 0 is the unpruned teacher
        masked = {**template, "params": pdjax.masks.apply(template["params"], masks)}
        pruned = pdjax.costs.inference_costs(
            teacher, masked, data.image_shape, batch_size=config.cost_batch_size,
            nonzero_params=dense["params"] - pdjax.masks.total(masks) + pdjax.masks.remaining(masks))
        rows.append({"model": f"{arm} teacher pruned {summary['sparsity']:.0%} (masked)",
                     "widths": str(teacher_row["widths"]), **pruned, "test_accuracy": summary["test_accuracy"]})
    for r in result.students:
        if r["teacher"] == f"{arm} pruned" and r["derived_from_sparsity"] is not None:
            student = pdjax.models.get(arm, data.num_classes, widths=r["widths"])
            variables = pdjax.models.init(student, jax.random.key(0), data.image_shape)
            costs = pdjax.costs.inference_costs(student, variables, data.image_shape,
                                                batch_size=config.cost_batch_size)
            rows.append({"model": f"{arm} student st{round(100 * r['derived_from_sparsity'])} (KD from pruned)",
                         "widths": str(r["widths"]), **costs, "test_accuracy": r["test_accuracy"]})
    return rows


RULE_COLUMNS = [("sparsity", "teacher sparsity", ".3f"), ("rule", "rule", "s"), ("widths", "student widths", "s"),
                ("student_weights", "student weights", ","), ("teacher_remaining", "teacher remaining", ","),
                ("ratio", "ratio", ".4f")]


def rule_rows(arm: str, result: pdjax.pipeline.PipelineResult, data: pdjax.ImageData,
              config: Config) -> list[dict[str, Any]]:
    """Every applicable width rule beside the other, for each pruned teacher: the widths and the
    student's conv + linear weights against the teacher's remaining weights."""
    rows = []
    for k in config.kd_rounds:
        (taught,) = result.teachers
        for row in pdjax.students.compare_rules(arm, taught.masks[k], data.num_classes, data.image_shape):
            rows.append({"sparsity": taught.pruning[k]["sparsity"], **row, "widths": str(row["widths"])})
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    preset, config, out, run_config = pdjax.runs.start(EXPERIMENT, PRESETS, argv, __doc__,
                                                       arms=pdjax.presets.ARMS)
    if config.width_rule not in pdjax.students.RULES:
        raise pdjax.config.ConfigError(f"width_rule must be one of {', '.join(pdjax.students.RULES)}")
    if config.width_rule != "chain" and "resnet18" in config.arms:
        raise pdjax.config.ConfigError(f"width_rule={config.width_rule} is defined for VGG only; "
                                       "use --set arms=vgg19 or width_rule=chain")

    def students(arm: str) -> list[pdjax.pipeline.StudentSpec]:
        _, train, _, kd = config.arm(arm)
        return [pdjax.pipeline.StudentSpec("student", arm, scratch=train, kd=kd, width_rule=config.width_rule)]

    def costs(arm: str, result: pdjax.pipeline.PipelineResult, data: pdjax.ImageData):
        rows = cost_rows(arm, result, data, config)
        rules = rule_rows(arm, result, data, config)
        notes = (f"Students derived with the `{config.width_rule}` rule. Costs measured on "
                 f"{jax.devices()[0].device_kind} ({jax.default_backend()}), batch {config.cost_batch_size}:\n\n"
                 f"{pdjax.reports.markdown_table(rows, COST_COLUMNS)}\n"
                 f"Width rules side by side (conv + linear weights of the student; the classifier is "
                 f"dense):\n\n{pdjax.reports.markdown_table(rules, RULE_COLUMNS)}\n")
        return notes, {"costs": rows, "width_rules": rules}

    return pdjax.runs.run_arms(config, out, EXPERIMENT, preset, run_config, students, costs)


if __name__ == "__main__":
    pdjax.runs.run_cli(main, sys.argv[1:])
