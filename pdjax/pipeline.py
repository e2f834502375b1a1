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

What it is given lives in `pdjax.specs` (`ExperimentConfig`, `StudentSpec`) and
`pdjax.pruning` (`PruneSpec`); what it returns in `pdjax.results` (`PipelineResult`); its
report and plots in `pdjax.pipeline_report`.

Usage:
    config = pdjax.specs.ExperimentConfig(seeds=(0, 1, 2), prune=pdjax.pruning.PruneSpec(per_round))
    result = pdjax.pipeline.prune_then_distill(
        config, out="runs/x", data=data, teacher="vgg19", teacher_schedule=schedule,
        students=[pdjax.specs.StudentSpec("student", "vgg11", scratch=schedule, kd=schedule)])
    print(pdjax.pipeline_report.report(result, "VGG19 -> VGG11"))
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import jax
from jax.sharding import Mesh

from pdjax import checkpoints, distill, masks as masks_lib, models, parallel, pruning, students as students_lib
from pdjax import tensorboard as tensorboard_lib
from pdjax.data import ImageData
from pdjax.pruning import PruneSpec
from pdjax.results import PipelineResult, StudentRow, TeacherResult, TeacherRound
from pdjax.specs import ExperimentConfig, StudentSpec
from pdjax.train import FitResult, Schedule, fit

# Student seed s trains with `fit(seed=STUDENT_SEED_OFFSET + s)`: the teacher uses `teacher_seed`,
# so a student of the teacher's own architecture (self-distillation) never repeats its run.
STUDENT_SEED_OFFSET = 1000


def train_stage(stage: str, *, model_name: str, data: ImageData, schedule: Schedule,
                out: str | Path, seed: int, widths: Sequence[int] | None = None,
                mesh: Any = None, augment: bool = True, eval_batch_size: int = 500,
                progress: bool = True, compute_dtype: str = "float32",
                init_from: str | Path | None = None, model_options: Mapping[str, Any] | None = None,
                tensorboard: str | Path | None = None, **fit_options: Any) -> tuple[Any, FitResult, dict[str, Any]]:
    """Trains one model as a named stage of an experiment, in `out/<stage>/` (resumable).

    `compute_dtype` is the model's (see `pdjax.models`, mixed precision); `model_options` go to
    `pdjax.models.get` (e.g. `{"stem_width": 8}` for a ResNet). With `init_from` (a
    stage directory or a saved tree, see `pdjax.checkpoints.load_variables`) the stage takes
    that trained model instead of training one, and only evaluates it. `fit_options` go to
    `pdjax.train.fit` (e.g. `on_variables`). With `tensorboard` (a directory), the stage's curves
    go to `tensorboard/<stage>/` (`pdjax.tensorboard`).

    Returns:
      (model, fit result, a results-table row for it).
    """
    model = models.get(model_name, data.num_classes, widths=widths, dtype=compute_dtype, **(model_options or {}))
    if init_from is not None:
        template = models.init(model, jax.random.key(seed), data.image_shape)
        fit_options["variables"] = checkpoints.load_variables(init_from, template)
        schedule = dataclasses.replace(schedule, epochs=0)
    result = fit(model, data, schedule, workdir=Path(out) / stage, seed=seed, mesh=mesh,
                 augment=augment, eval_batch_size=eval_batch_size, name=stage, progress=progress,
                 writer=tensorboard_lib.for_stage(tensorboard, stage), **fit_options)
    params = result.best_variables["params"]
    row = {"stage": stage, "model": model_name,
           "widths": list(widths) if widths is not None else list(models.default_widths(model_name)),
           "params": models.count_params(params),
           "prunable_params": models.count_params(params, prunable_only=True),
           **result.summary()}
    return model, result, row


class KDSource(NamedTuple):
    """A teacher a student can be distilled from, with what the reports say about it."""

    name: str
    round: int  # 0: unpruned
    sparsity: float
    teacher: distill.Teacher
    test_accuracy: float


def prune_then_distill(config: ExperimentConfig, *, out: str | Path, data: ImageData,
                       teacher: str | Sequence[str], teacher_schedule: Schedule, students: Sequence[StudentSpec],
                       prune: PruneSpec | None = None, mesh: Mesh | None = None, progress: bool = True,
                       restart: bool = False) -> PipelineResult:
    """Runs (or resumes) the whole method for one or several teachers and their students.

    Args:
      config: the settings every experiment shares, passed whole (`pdjax.specs.ExperimentConfig`
        or an experiment's subclass; its defaults are the paper's): `prune` (how each teacher is
        pruned, `pdjax.pruning.PruneSpec`), `kd_rounds` (the pruning
        rounds whose teachers are distilled, each in 1..prune.rounds), `width_multiplier` (of the
        teachers), `kd` (the KD loss's T and alpha), `seeds` (each student is trained once per
        seed; seed s gives every student arm the same initialisation and data order, fit seed
        `STUDENT_SEED_OFFSET + s`, so arms can be compared seed by seed), `seed` (the teachers'
        and their pruning's), `augment`, `eval_batch_size`, `compute_dtype` (every model's:
        'bfloat16' is mixed precision, parameters stay float32), `teacher_checkpoint` (use this
        trained teacher, a stage directory such as another run's `teacher/` or a tree saved by
        `pdjax.checkpoints.save_tree`, instead of training one; a checkpoint of another model is
        refused with `CheckpointMismatchError`; one teacher only) and `model_options()` (per
        architecture, options for `pdjax.models.get` of every model of it, e.g.
        `{"resnet18": {"stem_width": 4}}`).
      out: the run directory; every stage gets a directory in it.
      data: the data set.
      teacher: the teacher's architecture, or several (e.g. ("vgg19", "vgg19_dbl")). With
        several, each teacher's stages live in `out/<teacher>/` and a fixed-width student trained
        from scratch (which does not depend on the teacher) is trained once and shared.
      teacher_schedule: the teachers' training schedule.
      students: the students (see `pdjax.specs.StudentSpec`).
      prune: `config.prune` with another schedule (`config.prune_spec(schedule)`: an experiment
        whose arms each bring their pruning schedule); default `config.prune`, which must have one.
      mesh, progress: as in `pdjax.train.fit`.
      restart: delete `out` first and run every stage from the start. Without it, a stage whose
        directory other inputs produced (another schedule, seed, teacher, data, ...) is refused
        with `pdjax.records.StaleRunError`.

    Returns:
      A `pdjax.results.PipelineResult`.
    """
    prune = prune if prune is not None else config.prune_spec()
    teachers = [teacher] if isinstance(teacher, str) else list(teacher)
    if not teachers or len(set(teachers)) != len(teachers):
        raise ValueError(f"teachers must be distinct architecture names, got {teachers}")
    if config.teacher_checkpoint is not None and len(teachers) > 1:
        raise ValueError("teacher_checkpoint names one trained teacher; run one teacher with it")
    if any(not 1 <= k <= prune.rounds for k in config.kd_rounds):
        raise ValueError(f"kd_rounds {tuple(config.kd_rounds)} must lie in 1..{prune.rounds} (the pruning rounds)")
    mesh = mesh if mesh is not None else parallel.data_mesh()
    out = Path(out)
    if restart:
        parallel.remove_directory(out)
    run = _Run(config, data, out, mesh, progress)
    teacher_results = []
    for i, name in enumerate(teachers):
        prefix = "" if len(teachers) == 1 else f"{name}/"
        teacher_result, unpruned, pruned = _train_teacher(run, name, prefix, teacher_schedule, prune)  # 1-2.
        teacher_results.append(teacher_result)
        for spec in students:  # 3-4.
            _train_students(run, spec, prefix, unpruned, pruned, first_teacher=i == 0)
    return PipelineResult(teacher_results, run.rows, run.students, run.curves)


@dataclasses.dataclass
class _Run:
    """What every stage of one `prune_then_distill` call shares, and what its stages produced."""

    config: ExperimentConfig
    data: ImageData
    out: Path
    mesh: Mesh
    progress: bool
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # one per stage
    curves: dict[str, list[float]] = dataclasses.field(default_factory=dict)  # per stage
    students: list[StudentRow] = dataclasses.field(default_factory=list)  # one per student arm

    @property
    def logs(self) -> Path | None:
        return self.out / "tensorboard" if self.config.log == "tensorboard" else None

    def stage(self, name: str, model_name: str, widths: Sequence[int], schedule: Schedule, seed: int,
              **options: Any) -> tuple[Any, FitResult, dict[str, Any]]:
        """Trains (or resumes) one stage with the run's shared settings and records it."""
        config = self.config
        model, result, row = train_stage(
            name, model_name=model_name, widths=widths, schedule=schedule, seed=seed, data=self.data,
            out=self.out, mesh=self.mesh, augment=config.augment, eval_batch_size=config.eval_batch_size,
            progress=self.progress, compute_dtype=config.compute_dtype, tensorboard=self.logs,
            model_options=config.model_options().get(model_name), **options)
        self.rows.append(row)
        self.curves[name] = [h["val_accuracy"] for h in result.history]
        return model, result, row


def _train_teacher(run: _Run, name: str, prefix: str, schedule: Schedule,
                   prune: PruneSpec) -> tuple[TeacherResult, KDSource, dict[int, KDSource]]:
    """Trains one teacher (1) and prunes it round by round (2); returns it with the teachers its
    students are distilled from: unpruned, and pruned at each round of `kd_rounds`."""
    config, out = run.config, run.out
    point = None
    if prune.rewind == "weight":
        point = pruning.RewindPoint(prune.rewind_epoch, out / f"{prefix}teacher" / f"snapshot_{prune.rewind_epoch}")
    widths = models.scaled_widths(name, config.width_multiplier)
    model, result, _ = run.stage(f"{prefix}teacher", name, widths, schedule, config.seed,
                                 on_variables=point, init_from=config.teacher_checkpoint)
    rewind_variables = None if point is None else point.variables(result.variables)
    rounds = pruning.iterative_pruning(
        model, run.data, prune, variables=result.best_variables, workdir=out / f"{prefix}pruning",
        rewind_variables=rewind_variables, seed=config.seed, mesh=run.mesh, augment=config.augment,
        eval_batch_size=config.eval_batch_size, progress=run.progress,
        tensorboard=None if run.logs is None else run.logs / f"{prefix}pruning")
    dense_masks = masks_lib.init(result.best_variables["params"])
    teacher_rounds = {0: TeacherRound(0, 0.0, result.test_accuracy, dense_masks,
                                      {"round": 0, "sparsity": 0.0, "remaining": masks_lib.total(dense_masks),
                                       **result.summary()})}
    by_round = {r.round: r for r in rounds}
    for k, r in by_round.items():
        summary = r.summary()
        teacher_rounds[k] = TeacherRound(k, summary["sparsity"], r.result.test_accuracy, r.masks, summary)
    unpruned = KDSource(name, 0, 0.0, distill.Teacher(model, result.best_variables), result.test_accuracy)
    pruned = {k: KDSource(name, k, teacher_rounds[k].sparsity,
                          distill.Teacher(model, by_round[k].variables, by_round[k].masks),
                          teacher_rounds[k].test_accuracy) for k in config.kd_rounds}
    return TeacherResult(name, f"{prefix}teacher", teacher_rounds), unpruned, pruned


def _train_students(run: _Run, spec: StudentSpec, prefix: str, unpruned: KDSource,
                    pruned: Mapping[int, KDSource], first_teacher: bool) -> None:
    """Trains one student spec's arms (3-4) against one teacher's unpruned and pruned rounds."""
    if spec.width_rule is None:
        widths = models.scaled_widths(spec.model, spec.width_multiplier)
        # A fixed-width scratch student does not depend on the teacher: trained once.
        if first_teacher and "scratch" in spec.arms:
            _train_arm(run, f"{spec.label}_scratch", spec, widths, "scratch", None, None)
        if "kd_unpruned" in spec.arms:
            _train_arm(run, f"{prefix}{spec.label}_kd_unpruned", spec, widths, "kd_unpruned", unpruned, None)
        for k in run.config.kd_rounds if "kd_pruned" in spec.arms else ():
            _train_arm(run, f"{prefix}{spec.label}_kd_round_{k:02d}", spec, widths, "kd_pruned", pruned[k], None)
        return
    for k in run.config.kd_rounds:
        source = pruned[k]
        widths = students_lib.student_widths(spec.model, source.teacher.masks, spec.width_rule,
                                             image_shape=run.data.image_shape,
                                             **run.config.model_options().get(spec.model, {}))
        stem = f"{prefix}{spec.label}_round_{k:02d}"
        if "scratch" in spec.arms:
            _train_arm(run, f"{stem}_scratch", spec, widths, "scratch", None, source)
        if "kd_unpruned" in spec.arms:
            _train_arm(run, f"{stem}_kd_unpruned", spec, widths, "kd_unpruned", unpruned, source)
        if "kd_pruned" in spec.arms:
            _train_arm(run, f"{stem}_kd_pruned", spec, widths, "kd_pruned", source, source)


def _train_arm(run: _Run, name: str, spec: StudentSpec, widths: Sequence[int], arm: str,
               source: KDSource | None, derived: KDSource | None) -> None:
    """Trains one student arm once per seed (distilled from `source`, or from scratch without
    one; `derived`: the pruned teacher its widths come from) and records its row."""
    config = run.config
    accuracies, params = [], None
    for seed in config.seeds:
        stage_name = name if len(config.seeds) == 1 else f"{name}_seed{seed}"
        fit_seed = STUDENT_SEED_OFFSET + seed
        if source is None:
            _, result, row = run.stage(stage_name, spec.model, widths, spec.scratch, fit_seed)
        else:
            _, result, row = run.stage(stage_name, spec.model, widths, spec.kd, fit_seed, teacher=source.teacher,
                                       kd=config.kd)
        accuracies.append(result.test_accuracy)
        params = row["params"]
    run.students.append(StudentRow(
        student=spec.label, model=spec.model, widths=tuple(widths), width_rule=spec.width_rule,
        derived_round=None if derived is None else derived.round,
        derived_from_sparsity=None if derived is None else derived.sparsity, arm=arm,
        teacher_model=None if source is None else source.name,
        teacher_round=None if source is None else source.round,
        teacher_sparsity=None if source is None else source.sparsity,
        teacher_test_accuracy=None if source is None else source.test_accuracy,
        student_params=params, test_accuracies=tuple(accuracies), seeds=tuple(config.seeds)))
