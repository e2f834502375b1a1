"""VGG19 -> VGG11 (PAPER.md, CIFAR-100): the teacher and the students of "prune, then distill".

Stages, each in its own directory under the run directory and each resumable (run the same
command again after an interruption):
  teacher/           the VGG19 teacher
  pruning/round_k/   iterative global magnitude pruning of the teacher with learning-rate
                     rewinding, one directory per round (round 2 ~ 36%, 4 ~ 59%, 7 ~ 79% sparse)
  student_scratch/   the VGG11 student trained from scratch (no teacher)
  student_kd_unpruned/     VGG11 distilled from the unpruned teacher
  student_kd_round_<k>/    VGG11 distilled from the pruned teacher of round k (kd_rounds)
The teacher and its pruning rounds are trained once and shared by every student.

Presets:
  python experiments/vgg19_to_vgg11.py --preset demo    # digits, tiny widths: minutes on a CPU
  python experiments/vgg19_to_vgg11.py --preset cpu     # shared CIFAR-10 JPEGs, 1/8 widths, 2 CPU cores
  python experiments/vgg19_to_vgg11.py --preset paper   # CIFAR-100, the paper's widths and epochs

Overrides: `--set key=value` (repeatable; e.g. `--set train.epochs=3`,
`--set data=folder:PATH`), `--out DIR` (default runs/vgg19_to_vgg11/<preset>), `--restart`.
Results in the run directory: `results.md`, `results.json`, `curves.png` (validation accuracy
per epoch), `pruning_density.png` (per-layer density per round), `teacher_vs_sparsity.png`,
`student_vs_teacher_sparsity.png`.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence

import pdjax
from pdjax.train import Schedule

EXPERIMENT = "vgg19_to_vgg11"
SHARED_CIFAR10 = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "cifar10-jpeg.zip"


@dataclasses.dataclass(frozen=True)
class Config:
    data: str = "tfds:cifar100"
    teacher: str = "vgg19"
    student: str = "vgg11"
    width_multiplier: float = 1.0  # scales every width of teacher and student
    seed: int = 0
    val_fraction: float = 0.1
    max_train: int | None = None  # training images kept (before the validation hold-out)
    max_test: int | None = None
    data_dir: str | None = None  # tensorflow-datasets data directory
    augment: bool = True
    eval_batch_size: int = 500
    # Teacher and scratch students (PAPER.md, CIFAR-100 VGG).
    train: Schedule = Schedule(epochs=200, batch_size=128, lr=0.1, milestones=(60, 120, 160),
                               lr_factor=0.2, weight_decay=5e-4)
    # Each pruning round (PAPER.md, CIFAR-100 pruning).
    prune: Schedule = Schedule(epochs=130, batch_size=128, lr=0.1, milestones=(39, 84),
                               lr_factor=0.1, weight_decay=2e-4)
    prune_rounds: int = 7
    prune_fraction: float = 0.2
    prune_scope: str = "global"  # or "layerwise"
    rewind: str = "lr"  # "lr" (the paper), "weight" (to the teacher at rewind_epoch), "finetune"
    rewind_epoch: int = 0  # teacher epoch whose weights rewind="weight" restores
    finetune_lr: float = 1e-3
    # Distillation (PAPER.md, CIFAR-100 KD): students of the unpruned and of these rounds' teachers.
    kd: Schedule = Schedule(epochs=200, batch_size=128, lr=0.1, milestones=(60, 120, 160),
                            lr_factor=0.2, weight_decay=5e-4)
    kd_rounds: tuple[int, ...] = (2, 4, 7)  # ~36%, 59%, 79% sparsity at 20% per round
    kd_temperature: float = 10.0
    kd_alpha: float = 0.95


def paper() -> Config:
    return Config()


def cpu() -> Config:
    # The paper's schedule shapes (milestones at 30/60/80% and 30/65% of the epochs), shortened.
    train = Schedule(epochs=30, batch_size=128, lr=0.1, milestones=(9, 18, 24), lr_factor=0.2,
                     weight_decay=5e-4)
    return Config(data=f"folder:{SHARED_CIFAR10.resolve()}", width_multiplier=1 / 8, train=train,
                  prune=Schedule(epochs=6, batch_size=128, lr=0.1, milestones=(2, 4),
                                 lr_factor=0.1, weight_decay=2e-4),
                  kd=train)


def demo() -> Config:
    train = Schedule(epochs=12, batch_size=64, lr=0.05, milestones=(6, 9), lr_factor=0.2,
                     weight_decay=5e-4)
    return Config(data="digits", width_multiplier=1 / 16, train=train,
                  prune=Schedule(epochs=3, batch_size=64, lr=0.05, milestones=(1, 2),
                                 lr_factor=0.1, weight_decay=2e-4),
                  kd=train)


PRESETS = {"paper": paper, "cpu": cpu, "demo": demo}

COLUMNS = [("stage", "stage", "s"), ("model", "model", "s"), ("params", "params", ","),
           ("best_epoch", "best epoch", "d"), ("val_accuracy", "val acc", ".4f"),
           ("test_accuracy", "test acc", ".4f"), ("train_seconds", "train s", ".1f")]
STUDENT_COLUMNS = [("student", "student", "s"), ("teacher", "teacher", "s"),
                   ("teacher_sparsity", "teacher sparsity", ".3f"),
                   ("teacher_test_accuracy", "teacher test acc", ".4f"),
                   ("student_params", "student params", ","),
                   ("test_accuracy", "student test acc", ".4f")]
PRUNING_COLUMNS = [("round", "round", "d"), ("sparsity", "sparsity", ".3f"),
                   ("remaining", "remaining weights", ","), ("val_accuracy", "val acc", ".4f"),
                   ("test_accuracy", "teacher test acc", ".4f"), ("train_seconds", "train s", ".1f")]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    preset, config, out, restart = pdjax.config.parse_args(EXPERIMENT, PRESETS, argv, __doc__)
    if any(not 1 <= k <= config.prune_rounds for k in config.kd_rounds):
        raise pdjax.config.ConfigError(f"kd_rounds {config.kd_rounds} must lie in 1..prune_rounds "
                                       f"({config.prune_rounds})")
    pdjax.parallel.initialize_distributed()
    run_config = {"experiment": EXPERIMENT, "preset": preset, "config": pdjax.config.to_dict(config)}
    out = pdjax.runs.prepare(out, run_config, restart=restart)
    data = pdjax.data.load(config.data, val_fraction=config.val_fraction, split_seed=config.seed,
                           max_train=config.max_train, max_test=config.max_test,
                           data_dir=config.data_dir)
    mesh = pdjax.parallel.data_mesh()
    common = dict(data=data, out=out, seed=config.seed, mesh=mesh, augment=config.augment,
                  eval_batch_size=config.eval_batch_size)

    rows, curves = [], {}

    def stage(name: str, model_name: str, schedule: Schedule, **options: Any):
        widths = pdjax.models.scaled_widths(model_name, config.width_multiplier)
        model, result, row = pdjax.runs.train_stage(name, model_name=model_name, widths=widths,
                                                    schedule=schedule, **common, **options)
        rows.append(row)
        curves[f"{name} ({model_name})"] = [h["val_accuracy"] for h in result.history]
        return model, result

    snapshots = (config.rewind_epoch,) if config.rewind == "weight" else ()
    teacher, teacher_result = stage("teacher", config.teacher, config.train, snapshot_epochs=snapshots)
    rewind_variables = (pdjax.checkpoints.load_tree(out / "teacher" / f"snapshot_{config.rewind_epoch}",
                                                    teacher_result.variables)
                        if snapshots else None)
    rounds = pdjax.pruning.iterative_pruning(
        teacher, data, variables=teacher_result.best_variables, schedule=config.prune,
        rounds=config.prune_rounds, workdir=out / "pruning", fraction=config.prune_fraction,
        scope=config.prune_scope, rewind=config.rewind, rewind_variables=rewind_variables,
        finetune_lr=config.finetune_lr, seed=config.seed, mesh=mesh, augment=config.augment,
        eval_batch_size=config.eval_batch_size)

    # Students: from scratch, then distilled from the unpruned and from each pruned teacher.
    _, scratch = stage("student_scratch", config.student, config.train)
    student_rows = [{"student": config.student, "teacher": "none (scratch)",
                     "student_params": rows[-1]["params"], "test_accuracy": scratch.test_accuracy}]
    teachers = [("unpruned", 0.0, teacher_result.best_variables, None, teacher_result.test_accuracy)]
    for k in config.kd_rounds:
        r = rounds[k - 1]
        teachers.append((f"round_{k:02d}", r.summary()["sparsity"], r.variables, r.masks,
                         r.result.test_accuracy))
    for label, sparsity, variables, masks, accuracy in teachers:
        _, result = stage(f"student_kd_{label}", config.student, config.kd,
                          teacher=pdjax.distill.Teacher(teacher, variables, masks),
                          kd_temperature=config.kd_temperature, kd_alpha=config.kd_alpha)
        student_rows.append({"student": config.student,
                             "teacher": f"{config.teacher} {'unpruned' if masks is None else 'pruned'}",
                             "teacher_sparsity": sparsity, "teacher_test_accuracy": accuracy,
                             "student_params": rows[-1]["params"], "test_accuracy": result.test_accuracy})

    teacher_masks = pdjax.masks.init(teacher_result.best_variables["params"])
    all_masks = [teacher_masks] + [r.masks for r in rounds]
    labels = ["teacher"] + [f"round {r.round} ({r.summary()['sparsity']:.0%})" for r in rounds]
    pruning_rows = [{"round": 0, "sparsity": 0.0, "remaining": pdjax.masks.total(teacher_masks),
                     **teacher_result.summary()}] + [r.summary() for r in rounds]
    results = {**run_config, "environment": pdjax.runs.environment(),
               "data": {"source": config.data, "train": len(data.train), "val": len(data.val),
                        "test": len(data.test), "classes": data.num_classes},
               "rows": rows, "students": student_rows, "pruning": pruning_rows,
               "layer_density": {label: [dataclasses.asdict(s) for s in pdjax.sparsity.layer_stats(m)]
                                 for label, m in zip(labels, all_masks)}}
    table = pdjax.reports.markdown_table(rows, COLUMNS)
    student_table = pdjax.reports.markdown_table(student_rows, STUDENT_COLUMNS)
    pruning_table = pdjax.reports.markdown_table(pruning_rows, PRUNING_COLUMNS)
    markdown = (f"# {EXPERIMENT}, preset `{preset}`\n\nData: {config.data} ({len(data.train)} train, "
                f"{len(data.val)} val, {len(data.test)} test). Test accuracy is that of the epoch "
                f"with the best validation accuracy, except in pruning rounds, which keep their "
                f"last epoch (round 0 is the unpruned teacher). KD: T = {config.kd_temperature}, "
                f"alpha = {config.kd_alpha}.\n\n## Students\n\n{student_table}\n"
                f"## Every trained model\n\n{table}\n"
                f"## Pruning ({config.prune_scope}, rewind={config.rewind}, "
                f"{config.prune_fraction:.0%} per round)\n\n{pruning_table}\n"
                f"## Per-layer density\n\n"
                f"{pdjax.sparsity.report_table(all_masks, labels)}")
    if pdjax.parallel.is_main_process():
        pdjax.reports.write_results(out, results, markdown)
        pdjax.reports.plot_curves(out / "curves.png", curves, xlabel="epoch",
                                  ylabel="validation accuracy", title=f"{EXPERIMENT} ({preset})")
        pdjax.sparsity.plot_density(out / "pruning_density.png", all_masks, labels,
                                    title=f"{config.teacher}: per-layer density by round")
        pdjax.reports.plot_xy(out / "teacher_vs_sparsity.png",
                              [r["sparsity"] for r in pruning_rows],
                              {"teacher": [r["test_accuracy"] for r in pruning_rows]},
                              xlabel="sparsity", ylabel="test accuracy",
                              title=f"pruned {config.teacher} ({preset})")
        kd_rows = student_rows[1:]
        pdjax.reports.plot_xy(out / "student_vs_teacher_sparsity.png",
                              [r["teacher_sparsity"] for r in kd_rows],
                              {f"{config.student} by KD": [r["test_accuracy"] for r in kd_rows],
                               f"{config.student} from scratch": [scratch.test_accuracy] * len(kd_rows)},
                              xlabel="teacher sparsity", ylabel="student test accuracy",
                              title=f"{config.teacher} -> {config.student} ({preset})")
        print(f"\n{student_table}\n{pruning_table}\nresults in {out}")
    return results


if __name__ == "__main__":
    pdjax.runs.run_cli(main, sys.argv[1:])
