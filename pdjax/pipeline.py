"""Prune, then distill: the four steps of the method as one resumable pipeline.

    teacher/                         1. train the teacher
    pruning/round_<k>/               2. prune it (iterative, with rewinding)
    <label>_scratch/ ...             3-4. students: from scratch, distilled from the unpruned
    <label>_kd_unpruned/ ...              teacher, distilled from the pruned teacher of each
    <label>_kd_round_<k>/ ...             round in `kd_rounds`

A student either has fixed widths (a VGG11 student of a VGG19 teacher), or widths derived from
each pruned teacher's masks (`width_rule="chain"`, the paper's compression scheme); a derived
student of round k is trained from scratch, distilled from the unpruned teacher and distilled
from round k's teacher (`<label>_round_<k>_scratch`, `..._kd_unpruned`, `..._kd_pruned`).
The teacher and its rounds are trained once and shared by every student. With several `seeds`,
each student is trained once per seed (`..._seed<s>`) and reported as mean and std.

Usage:
    result = pdjax.pipeline.prune_then_distill(
        out="runs/x", data=data, teacher="vgg19", teacher_schedule=schedule,
        prune=pdjax.pipeline.PruneSpec(schedule=per_round),
        students=[pdjax.pipeline.StudentSpec("student", "vgg11", scratch=schedule, kd=schedule)])
    print(pdjax.pipeline.report(result, "VGG19 -> VGG11"))
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from jax.sharding import Mesh

from pdjax import checkpoints, distill, masks as masks_lib, models, parallel, pruning, reports
from pdjax import runs, sparsity, students as students_lib
from pdjax.data import ImageData
from pdjax.train import Schedule
from pdjax.types import Masks


@dataclasses.dataclass(frozen=True)
class PruneSpec:
    """How the teacher is pruned (see `pdjax.pruning.iterative_pruning`)."""

    schedule: Schedule
    rounds: int = 7
    fraction: float = 0.2
    scope: str = "global"  # or "layerwise"
    rewind: str = "lr"  # "lr" (the paper), "weight" (to the teacher at rewind_epoch), "finetune"
    rewind_epoch: int = 0
    finetune_lr: float = 1e-3


@dataclasses.dataclass(frozen=True)
class StudentSpec:
    """One student architecture and its schedules.

    Attributes:
      label: prefix of its stage directories ("student" -> student_scratch/, ...).
      model: its architecture name.
      scratch: schedule when trained from scratch.
      kd: schedule when distilled.
      width_rule: None for the model's own widths times `width_multiplier`; "chain" or
        "balanced" to derive the widths from each pruned teacher's masks.
      width_multiplier: scales the fixed widths.
    """

    label: str
    model: str
    scratch: Schedule
    kd: Schedule
    width_rule: str | None = None
    width_multiplier: float = 1.0


@dataclasses.dataclass
class PipelineResult:
    """What `prune_then_distill` returns; every list is JSON-able except `masks`."""

    teacher: str
    rows: list[dict[str, Any]]  # every trained model, one row each
    students: list[dict[str, Any]]  # the paper's table: student x teacher kind x sparsity
    pruning: list[dict[str, Any]]  # round 0 (the unpruned teacher) and every round
    masks: list[Masks]  # teacher's (all kept) and every round's
    mask_labels: list[str]
    curves: dict[str, list[float]]  # validation accuracy per epoch, per stage

    def to_json(self) -> dict[str, Any]:
        return {"teacher": self.teacher, "rows": self.rows, "students": self.students,
                "pruning": self.pruning,
                "layer_density": {label: [dataclasses.asdict(s) for s in sparsity.layer_stats(m)]
                                  for label, m in zip(self.mask_labels, self.masks)}}


class KDSource(NamedTuple):
    """A teacher a student can be distilled from, with what the reports say about it."""

    sparsity: float
    teacher: distill.Teacher
    test_accuracy: float


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def prune_then_distill(*, out: str | Path, data: ImageData, teacher: str, teacher_schedule: Schedule,
                       prune: PruneSpec, students: Sequence[StudentSpec], kd_rounds: Sequence[int] = (2, 4, 7),
                       teacher_width_multiplier: float = 1.0, kd_temperature: float = distill.TEMPERATURE,
                       kd_alpha: float = distill.ALPHA, seeds: Sequence[int] = (0,),
                       mesh: Mesh | None = None, augment: bool = True, eval_batch_size: int = 500,
                       progress: bool = True, compute_dtype: str = "float32",
                       teacher_checkpoint: str | Path | None = None) -> PipelineResult:
    """Runs (or resumes) the whole method for one teacher and its students.

    Args:
      out: the run directory; every stage gets a directory in it.
      data: the data set.
      teacher: the teacher's architecture; its widths are the model's times
        `teacher_width_multiplier`.
      teacher_schedule: the teacher's training schedule.
      prune: how it is pruned.
      students: the students (see `StudentSpec`).
      kd_rounds: the pruning rounds whose teachers are distilled (each in 1..prune.rounds).
      kd_temperature, kd_alpha: the KD loss's T and alpha.
      seeds: the teacher and the pruning use the first seed; each student is trained per seed.
      mesh, augment, eval_batch_size, progress: as in `pdjax.train.fit`.
      compute_dtype: every model's compute dtype ('bfloat16': mixed precision, parameters
        stay float32).
      teacher_checkpoint: use this trained teacher (a stage directory such as another run's
        `teacher/`, or a tree saved by `pdjax.checkpoints.save_tree`) instead of training one;
        a checkpoint of another model is refused (`CheckpointMismatchError`).

    Returns:
      A `PipelineResult`.
    """
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    if any(not 1 <= k <= prune.rounds for k in kd_rounds):
        raise ValueError(f"kd_rounds {tuple(kd_rounds)} must lie in 1..{prune.rounds} (the pruning rounds)")
    mesh = mesh if mesh is not None else parallel.data_mesh()
    out = Path(out)
    common = dict(data=data, out=out, mesh=mesh, augment=augment, eval_batch_size=eval_batch_size,
                  progress=progress, compute_dtype=compute_dtype)
    rows: list[dict[str, Any]] = []
    curves: dict[str, list[float]] = {}

    def stage(name: str, model_name: str, widths: Sequence[int], schedule: Schedule, seed: int,
              **options: Any):
        model, result, row = runs.train_stage(name, model_name=model_name, widths=widths,
                                              schedule=schedule, seed=seed, **common, **options)
        rows.append(row)
        curves[name] = [h["val_accuracy"] for h in result.history]
        return model, result, row

    # 1. The teacher.
    snapshots = (prune.rewind_epoch,) if prune.rewind == "weight" else ()
    teacher_widths = models.scaled_widths(teacher, teacher_width_multiplier)
    teacher_model, teacher_result, _ = stage("teacher", teacher, teacher_widths, teacher_schedule,
                                             seeds[0], snapshot_epochs=snapshots,
                                             init_from=teacher_checkpoint)
    rewind_variables = None
    if snapshots:
        rewind_variables = checkpoints.load_tree(out / "teacher" / f"snapshot_{prune.rewind_epoch}",
                                                 teacher_result.variables)
    # 2. Pruning.
    rounds = pruning.iterative_pruning(
        teacher_model, data, variables=teacher_result.best_variables, schedule=prune.schedule,
        rounds=prune.rounds, workdir=out / "pruning", fraction=prune.fraction, scope=prune.scope,
        rewind=prune.rewind, rewind_variables=rewind_variables, finetune_lr=prune.finetune_lr,
        seed=seeds[0], mesh=mesh, augment=augment, eval_batch_size=eval_batch_size, progress=progress)
    dense_masks = masks_lib.init(teacher_result.best_variables["params"])
    round_summaries = [r.summary() for r in rounds]
    pruning_rows = [{"round": 0, "sparsity": 0.0, "remaining": masks_lib.total(dense_masks),
                     **teacher_result.summary()}] + round_summaries

    unpruned = KDSource(0.0, distill.Teacher(teacher_model, teacher_result.best_variables),
                        teacher_result.test_accuracy)

    def pruned(k: int) -> KDSource:
        r = rounds[k - 1]
        return KDSource(round_summaries[k - 1]["sparsity"], distill.Teacher(teacher_model, r.variables, r.masks),
                        r.result.test_accuracy)

    # 3-4. Students.
    student_rows: list[dict[str, Any]] = []

    def train_student(name: str, spec: StudentSpec, widths: Sequence[int], kind: str,
                      source: KDSource | None, derived_from: float | None) -> None:
        accuracies, params = [], None
        for seed in seeds:
            stage_name = name if len(seeds) == 1 else f"{name}_seed{seed}"
            if source is None:
                _, result, row = stage(stage_name, spec.model, widths, spec.scratch, seed)
            else:
                _, result, row = stage(stage_name, spec.model, widths, spec.kd, seed, teacher=source.teacher,
                                       kd_temperature=kd_temperature, kd_alpha=kd_alpha)
            accuracies.append(result.test_accuracy)
            params = row["params"]
        mean, std = _mean_std(accuracies)
        student_rows.append({
            "student": spec.label, "model": spec.model, "widths": list(widths),
            "derived_from_sparsity": derived_from, "teacher": kind,
            "teacher_sparsity": None if source is None else source.sparsity,
            "teacher_test_accuracy": None if source is None else source.test_accuracy,
            "student_params": params, "test_accuracy": mean, "test_accuracy_std": std,
            "test_accuracies": accuracies, "seeds": list(seeds)})

    for spec in students:
        if spec.width_rule is None:
            widths = models.scaled_widths(spec.model, spec.width_multiplier)
            train_student(f"{spec.label}_scratch", spec, widths, "none (scratch)", None, None)
            train_student(f"{spec.label}_kd_unpruned", spec, widths, f"{teacher} unpruned", unpruned, None)
            for k in kd_rounds:
                train_student(f"{spec.label}_kd_round_{k:02d}", spec, widths, f"{teacher} pruned", pruned(k), None)
        else:
            for k in kd_rounds:
                source = pruned(k)
                widths = students_lib.student_widths(spec.model, source.teacher.masks, spec.width_rule)
                prefix = f"{spec.label}_round_{k:02d}"
                train_student(f"{prefix}_scratch", spec, widths, "none (scratch)", None, source.sparsity)
                train_student(f"{prefix}_kd_unpruned", spec, widths, f"{teacher} unpruned", unpruned,
                              source.sparsity)
                train_student(f"{prefix}_kd_pruned", spec, widths, f"{teacher} pruned", source, source.sparsity)

    labels = ["teacher"] + [f"round {s['round']} ({s['sparsity']:.0%})" for s in round_summaries]
    return PipelineResult(teacher, rows, student_rows, pruning_rows, [dense_masks] + [r.masks for r in rounds],
                          labels, curves)


STAGE_COLUMNS = [("stage", "stage", "s"), ("model", "model", "s"), ("params", "params", ","),
                 ("best_epoch", "best epoch", "d"), ("val_accuracy", "val acc", ".4f"),
                 ("test_accuracy", "test acc", ".4f"), ("train_seconds", "train s", ".1f")]
PRUNING_COLUMNS = [("round", "round", "d"), ("sparsity", "sparsity", ".3f"),
                   ("remaining", "remaining weights", ","), ("val_accuracy", "val acc", ".4f"),
                   ("test_accuracy", "teacher test acc", ".4f"), ("train_seconds", "train s", ".1f")]


def student_columns(result: PipelineResult) -> list[reports.Column]:
    columns = [("model", "student", "s")]
    if any(r["derived_from_sparsity"] is not None for r in result.students):
        columns += [("derived_from_sparsity", "widths from sparsity", ".2f")]
    columns += [("teacher", "teacher", "s"), ("teacher_sparsity", "teacher sparsity", ".3f"),
                ("teacher_test_accuracy", "teacher test acc", ".4f"),
                ("student_params", "student params", ","), ("test_accuracy", "student test acc", ".4f")]
    if any(r["test_accuracy_std"] is not None for r in result.students):
        columns.append(("test_accuracy_std", "± std", ".4f"))
    return columns


def report(result: PipelineResult, title: str, notes: str = "") -> str:
    """The markdown report: students (the paper's table), pruning rounds, every stage, and the
    per-layer density of every round."""
    return (f"# {title}\n\n{notes}"
            "Test accuracy is that of the epoch with the best validation accuracy, except in pruning "
            "rounds, which keep their last epoch (round 0 is the unpruned teacher).\n\n"
            f"## Students\n\n{reports.markdown_table(result.students, student_columns(result))}\n"
            f"## Pruning the teacher ({result.teacher})\n\n"
            f"{reports.markdown_table(result.pruning, PRUNING_COLUMNS)}\n"
            f"## Every trained model\n\n{reports.markdown_table(result.rows, STAGE_COLUMNS)}\n"
            f"## Per-layer density of the teacher's masks\n\n"
            f"{sparsity.report_table(result.masks, result.mask_labels)}")


def plot(out: str | Path, result: PipelineResult, title: str) -> None:
    """Writes curves.png, pruning_density.png, teacher_vs_sparsity.png and
    student_vs_teacher_sparsity.png in `out`."""
    out = Path(out)
    reports.plot_curves(out / "curves.png", result.curves, xlabel="epoch", ylabel="validation accuracy",
                        title=title)
    sparsity.plot_density(out / "pruning_density.png", result.masks, result.mask_labels,
                          title=f"{result.teacher}: per-layer density by round")
    reports.plot_xy(out / "teacher_vs_sparsity.png", [r["sparsity"] for r in result.pruning],
                    {result.teacher: [r["test_accuracy"] for r in result.pruning]},
                    xlabel="sparsity", ylabel="teacher test accuracy", title=title)
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for r in result.students:
        if r["teacher_sparsity"] is None and r["derived_from_sparsity"] is None:
            continue  # a fixed-width scratch student: drawn as a flat line below
        x = r["derived_from_sparsity"] if r["derived_from_sparsity"] is not None else r["teacher_sparsity"]
        kind = "scratch" if r["teacher_sparsity"] is None else (
            "KD from unpruned" if r["derived_from_sparsity"] is not None and r["teacher_sparsity"] == 0.0
            else "KD")
        xs, ys = curves.setdefault(f"{r['model']} {kind}", ([], []))
        xs.append(x)
        ys.append(r["test_accuracy"])
    for r in result.students:
        if r["teacher_sparsity"] is None and r["derived_from_sparsity"] is None:
            xs = sorted({x for cx, _ in curves.values() for x in cx}) or [0.0]
            curves[f"{r['model']} scratch"] = (xs, [r["test_accuracy"]] * len(xs))
    derived = any(r["derived_from_sparsity"] is not None for r in result.students)
    reports.plot_series(out / "student_vs_teacher_sparsity.png", curves,
                        xlabel=("sparsity of the teacher the widths come from" if derived
                                else "teacher sparsity"),
                        ylabel="student test accuracy", title=title)
