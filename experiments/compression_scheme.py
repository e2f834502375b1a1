"""The compression scheme (PAPER.md): prune the teacher, derive a student with the teacher's depth
and widths sized from the pruned teacher's per-layer remaining weights, and distill the pruned
teacher into it. Arms: VGG19 on CIFAR-100 and ResNet18 on Tiny-ImageNet.

For each sparsity of `kd_rounds` (36/59/79% at 20% per round) a student is derived by each rule
of `width_rules` ("st36", ...) and trained in each arm of `student_arms`: from scratch, distilled
from the unpruned teacher, distilled from the pruned teacher it was derived from. Besides the
paper's chain rule, pdjax has two more (`pdjax.students`): "uniform", the teacher's widths times
one factor with as many weights as the chain student (does the per-layer shape matter, or only
the size?), and "balanced" (VGG only; the ResNet arm skips it). The cost table gives each
model's parameters, FLOPs and inference images/s measured in the same run beside its test
accuracy: a masked teacher computes as much as the dense one; the derived student is what gets
faster.

Presets:
  python experiments/compression_scheme.py --preset demo    # digits, tiny widths, a few minutes on a CPU
  python experiments/compression_scheme.py --preset cpu     # shared CIFAR-10 JPEGs, 1/16 widths, 3 seeds, 3 rules
  python experiments/compression_scheme.py --preset paper --set resnet_data=folder:/data/tiny-imagenet-200.zip

Overrides: `--set key=value` (e.g. `--set families=vgg19`, `--set width_rules=chain,balanced`),
`--out DIR`, `--restart`.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence

import jax

import pdjax
from pdjax.cli import presets, runs
from pdjax.steps import Schedule
from pdjax.types import check

EXPERIMENT = "compression_scheme"


@dataclasses.dataclass(frozen=True)
class Config(pdjax.designs.prune_distill.TwoFamilyConfig):
    # Width rules of the derived students: "chain" (the paper's; always first, the others are
    # compared with it), "uniform", "balanced" (VGG arms only).
    width_rules: tuple[str, ...] = ("chain",)
    student_arms: tuple[str, ...] = pdjax.designs.prune_distill.STUDENT_ARMS  # the paper's three baselines
    cost_batch_size: int = 256  # batch of the inference images/s measurement

    def __post_init__(self) -> None:
        super().__post_init__()
        check([
            (pdjax.designs.common.distinct_among(self.width_rules, pdjax.students.RULES) and self.width_rules[0] == "chain",
             f"width_rules={self.width_rules}: start with 'chain', then any of {', '.join(pdjax.students.RULES)}"),
            (pdjax.designs.common.distinct_among(self.student_arms, pdjax.designs.prune_distill.STUDENT_ARMS),
             f"student_arms={self.student_arms}: some of {', '.join(pdjax.designs.prune_distill.STUDENT_ARMS)}"),
            (self.cost_batch_size >= 1, f"cost_batch_size={self.cost_batch_size} must be >= 1"),
        ])

    def rules(self, family: str) -> tuple[str, ...]:
        """The width rules of a family: "balanced" is defined for VGG only."""
        return tuple(r for r in self.width_rules if r != "balanced" or family.startswith("vgg"))


def paper() -> Config:
    return Config()


def cpu() -> Config:
    # The self-distillation cpu preset's teachers and pruning (`presets.two_family_cpu`: 1/16
    # width, shared CIFAR-10 JPEGs, 3 seeds), with shorter student schedules: 3 rules x 3
    # sparsities x 2 arms x 3 seeds = 54 VGG students and 36 ResNet students must fit in the
    # 2.5 hours. Estimate (not a measurement) from the self-distillation run's uncontended rates
    # (VGG19/16 student ~9.5 s/epoch, KD ~3 s/epoch more for the teacher; ResNet18/16 ~18 s),
    # derived students 0.5-0.8x as costly: teachers and pruning ~26 min, VGG students ~55 min,
    # ResNet students ~53 min, ~2.2 h in all. The paper's third baseline (KD from the unpruned
    # teacher) is left out here; `--set student_arms=scratch,kd_unpruned,kd_pruned` adds it.
    vgg_student = Schedule(epochs=8, batch_size=128, lr=0.1, milestones=(3, 5, 7), lr_factor=0.2,
                           weight_decay=5e-4)
    resnet_student = Schedule(epochs=6, batch_size=128, lr=0.05, milestones=(2, 4, 5), lr_factor=0.2,
                              weight_decay=5e-4)
    return presets.two_family_cpu(Config, width_rules=("chain", "uniform", "balanced"),
                                     student_arms=("scratch", "kd_pruned"),
                                     vgg_student=vgg_student, vgg_distill=vgg_student,
                                     resnet_student=resnet_student, resnet_distill=resnet_student)


def demo() -> Config:
    return dataclasses.replace(presets.two_family_demo(Config), cost_batch_size=64)


PRESETS = {"paper": paper, "cpu": cpu, "demo": demo}
ARM_COLUMNS = {"scratch": "scratch", "kd_pruned": "KD from its pruned teacher", "kd_unpruned": "KD from unpruned"}
COST_COLUMNS = [("model", "model", "s"), ("widths", "widths", "s"), ("params", "params", ","),
                ("nonzero_params", "nonzero params", ","), ("flops", "FLOPs / image", ",.0f"),
                ("images_per_second", "inference images/s", ",.0f"), ("own", "teacher test acc", "s")]


def cost_rows(family: str, result: pdjax.designs.prune_distill.PipelineResult, data: pdjax.ImageData,
              config: Config) -> list[dict[str, Any]]:
    """Parameters, FLOPs and measured inference speed of the teacher, its pruned rounds and every
    derived student (one row per rule and sparsity), all on this machine in this run, beside
    test accuracy (a student's per arm, mean ± std over seeds). Costs do not depend on the
    weights' values, so freshly initialised variables (with each round's masks applied) stand
    in for trained ones."""
    (taught,) = result.teachers
    options = config.model_options().get(family, {})
    teacher_row = next(r for r in result.rows if r["stage"] == taught.stage)
    teacher = pdjax.models.get(family, data.num_classes, widths=teacher_row["widths"], **options)
    template = pdjax.models.init(teacher, jax.random.key(0), data.image_shape)
    rows = []
    forwards = {f"{family} teacher (dense)": pdjax.costs.forward_pass(teacher, template)}
    dense = pdjax.costs.inference_costs(teacher, template, data.image_shape)
    rows.append({"model": f"{family} teacher (dense)", "kind": "teacher", "widths": str(teacher_row["widths"]),
                 **dense, "test_accuracy": teacher_row["test_accuracy"],
                 "own": f"{teacher_row['test_accuracy']:.4f}"})
    for k in config.kd_rounds:
        pruned_teacher = taught.rounds[k]
        masks = pruned_teacher.masks
        masked = pdjax.masks.apply_to_variables(template, masks)
        pruned = pdjax.costs.inference_costs(
            teacher, masked, data.image_shape,
            nonzero_params=dense["params"] - pdjax.masks.total(masks) + pdjax.masks.remaining(masks))
        forwards[f"{family} teacher pruned {pruned_teacher.sparsity:.0%} (masked)"] = pdjax.costs.forward_pass(teacher, masked)
        rows.append({"model": f"{family} teacher pruned {pruned_teacher.sparsity:.0%} (masked)", "kind": "pruned teacher",
                     "sparsity": pruned_teacher.sparsity, "widths": str(teacher_row["widths"]), **pruned,
                     "test_accuracy": pruned_teacher.test_accuracy, "own": f"{pruned_teacher.test_accuracy:.4f}"})
    students: dict[tuple, dict[str, Any]] = {}
    for r in result.students:
        if r.derived_round is None:
            continue
        key = (r.width_rule, r.derived_round, r.widths)
        if key not in students:
            student = pdjax.models.get(family, data.num_classes, widths=r.widths, **options)
            variables = pdjax.models.init(student, jax.random.key(0), data.image_shape)
            costs = pdjax.costs.inference_costs(student, variables, data.image_shape)
            forwards[f"{family} {r.width_rule} st{round(100 * r.derived_from_sparsity)}"] = \
                pdjax.costs.forward_pass(student, variables)
            students[key] = {"model": f"{family} {r.width_rule} st{round(100 * r.derived_from_sparsity)}",
                             "kind": f"{r.width_rule} student", "rule": r.width_rule,
                             "sparsity": r.derived_from_sparsity, "widths": str(list(r.widths)), **costs}
        std = r.test_accuracy_std or 0.0
        students[key].update({r.arm: r.test_accuracy, f"{r.arm}_std": std,
                              f"{r.arm}_text": f"{r.test_accuracy:.4f} ± {std:.4f}"})
    rows += list(students.values())
    # Every model's speed side by side: interleaved, best of 7 rounds (pdjax.costs.throughput).
    images = jax.random.normal(jax.random.key(0), (config.cost_batch_size, *data.image_shape))
    speeds = pdjax.costs.throughput(forwards, images)
    for row in rows:
        row["images_per_second"] = speeds[row["model"]]
    return rows


def cost_columns(config: Config) -> list[pdjax.render.Column]:
    return COST_COLUMNS + [(f"{a}_text", f"{ARM_COLUMNS[a]} (mean ± std)", "s") for a in config.student_arms]


def plot_accuracy_vs_params(path: Path, family: str, rows: list[dict[str, Any]], config: Config) -> None:
    """Test accuracy against parameters (nonzero ones for a pruned teacher): one marker per
    student kind (rule and arm), error bars the std over seeds."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    errors: dict[str, list[float]] = {}
    for row in sorted(rows, key=lambda r: r["nonzero_params"]):
        if row["kind"] == "pruned teacher":
            points = [("pruned teacher (nonzero params)", row["test_accuracy"], 0.0)]
        elif row["kind"] == "teacher":
            points = [("dense teacher", row["test_accuracy"], 0.0)]
        else:
            points = [(f"{row['rule']} student, {ARM_COLUMNS[a]}", row[a], row[f"{a}_std"])
                      for a in config.student_arms if a in row]
        for label, accuracy, std in points:
            xs, ys = series.setdefault(label, ([], []))
            xs.append(row["nonzero_params"])
            ys.append(accuracy)
            errors.setdefault(label, []).append(std)
    pdjax.render.plot_panels(path, [pdjax.render.Panel(series, "test accuracy (mean ± std over seeds)", errors)],
                              xlabel="parameters (nonzero, for a masked teacher)",
                              title=f"{EXPERIMENT}: {family}, accuracy against size")


RULE_COLUMNS = [("sparsity", "teacher sparsity", ".3f"), ("rule", "rule", "s"), ("widths", "student widths", "s"),
                ("student_weights", "student weights", ","), ("teacher_remaining", "teacher remaining", ","),
                ("ratio", "ratio", ".4f")]


def rule_rows(family: str, result: pdjax.designs.prune_distill.PipelineResult, data: pdjax.ImageData,
              config: Config) -> list[dict[str, Any]]:
    """Every applicable width rule beside the other, for each pruned teacher: the widths and the
    student's conv + linear weights against the teacher's remaining weights."""
    (taught,) = result.teachers
    rows = []
    for k in config.kd_rounds:
        for row in pdjax.students.compare_rules(family, taught.rounds[k].masks, data.num_classes, data.image_shape,
                                                **config.model_options().get(family, {})):
            rows.append({"sparsity": taught.rounds[k].sparsity, **row, "widths": str(row["widths"])})
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    preset, config, out, run_config = runs.start(EXPERIMENT, PRESETS, argv, __doc__)

    def students(family: str) -> list[pdjax.designs.prune_distill.StudentSpec]:
        # The chain rule's students keep the stage names of a one-rule run ("student_round_02_...").
        return [pdjax.designs.prune_distill.StudentSpec("student" if rule == "chain" else f"{rule}_student", family,
                                                        scratch=config.family(family).scratch,
                                                        distill=config.family(family).distill,
                                                        width_rule=rule, arms=config.student_arms)
                for rule in config.rules(family)]

    def costs(family: str, result: pdjax.designs.prune_distill.PipelineResult, data: pdjax.ImageData):
        rows = cost_rows(family, result, data, config)
        rules = rule_rows(family, result, data, config)
        plot_accuracy_vs_params(out / family / "accuracy_vs_params.png", family, rows, config)
        skipped = [r for r in config.width_rules if r not in config.rules(family)]
        notes = (f"Students derived with the rules {', '.join(config.rules(family))}"
                 + (f" ({', '.join(skipped)}: VGG only)" if skipped else "") + ". Costs measured on "
                 f"{jax.devices()[0].device_kind} ({jax.default_backend()}), batch {config.cost_batch_size}, "
                 "in the run, every model interleaved and the best of 7 rounds kept (`pdjax.costs.throughput`; "
                 "another process on the cores would still move them); accuracy is test "
                 "accuracy, mean ± std over the seeds. `accuracy_vs_params.png` plots it.\n\n"
                 f"{pdjax.render.markdown_table(rows, cost_columns(config))}\n"
                 f"Width rules side by side (conv + linear weights of the student; the classifier is "
                 f"dense):\n\n{pdjax.render.markdown_table(rules, RULE_COLUMNS)}\n")
        return notes, {"costs": rows, "width_rules": rules}

    return pdjax.designs.prune_distill.run_families(config, out, experiment=EXPERIMENT, preset=preset,
                                                   run_config=run_config, students=students, after=costs)


if __name__ == "__main__":
    runs.run_cli(main, sys.argv[1:])
