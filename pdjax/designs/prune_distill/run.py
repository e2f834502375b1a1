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

What it is given lives in `config` (`ExperimentConfig`, `StudentSpec`, `TwoFamilyConfig`) and
`pdjax.pruning` (`PruneSpec`); what it returns in `results` (`PipelineResult`); its report and
plots in `report`; each stage is trained by `pdjax.designs.stage`. `run_families` runs it for
each family of a `TwoFamilyConfig` and writes the reports.

Usage:
    from pdjax.designs import prune_distill
    config = prune_distill.ExperimentConfig(seeds=(0, 1, 2), prune=pdjax.pruning.PruneSpec(per_round))
    result = prune_distill.prune_then_distill(
        config, out="runs/x", data=data, teacher="vgg19", teacher_schedule=schedule,
        students=[prune_distill.StudentSpec("student", "vgg11", scratch=schedule, distill=schedule)])
    print(prune_distill.report.report(result, "VGG19 -> VGG11"))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

from jax.sharding import Mesh

from pdjax import diagnostics, distill, masks as masks_lib, models, parallel, students as students_lib
from pdjax.data import ImageData
from pdjax.designs import common
from pdjax.designs.prune_distill import report as report_lib
from pdjax.designs.prune_distill.config import ExperimentConfig, StudentSpec, TwoFamilyConfig
from pdjax.designs.prune_distill.results import PipelineResult, StudentRow, TeacherResult, TeacherRound
from pdjax.designs.stage import STUDENT_SEED_OFFSET, Stages
from pdjax.pruning import PruneSpec
from pdjax.steps import Schedule


class KDSource(NamedTuple):
    """A teacher a student can be distilled from, with what the reports say about it."""

    name: str
    round: int  # 0: unpruned
    sparsity: float
    teacher: distill.Teacher
    test_accuracy: float
    stage: str  # its stage directory in the run
    logits: Any  # on the test split, for `pdjax.diagnostics`


def prune_then_distill(config: ExperimentConfig, *, out: str | Path, data: ImageData,
                       teacher: str | Sequence[str], teacher_schedule: Schedule, students: Sequence[StudentSpec],
                       prune: PruneSpec | None = None, mesh: Mesh | None = None, progress: bool = True,
                       restart: bool = False) -> PipelineResult:
    """Runs (or resumes) the whole method for one or several teachers and their students.

    Args:
      config: the settings every experiment shares, passed whole (`ExperimentConfig`
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
      students: the students (see `StudentSpec`).
      prune: `config.prune` with another schedule (`config.prune_spec(schedule)`: an experiment
        whose arms each bring their pruning schedule); default `config.prune`, which must have one.
      mesh, progress: as in `pdjax.train.fit`.
      restart: delete `out` first and run every stage from the start. Without it, a stage whose
        directory other inputs produced (another schedule, seed, teacher, data, ...) is refused
        with `pdjax.provenance.StaleRunError`.

    Returns:
      A `PipelineResult`.
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
    run = Stages(config, data, out, mesh, progress)
    teacher_results, students_rows = [], []
    for i, name in enumerate(teachers):
        prefix = "" if len(teachers) == 1 else f"{name}/"
        teacher_result, unpruned, pruned = _train_teacher(run, name, prefix, teacher_schedule, prune)  # 1-2.
        teacher_results.append(teacher_result)
        for spec in students:  # 3-4.
            students_rows += _train_students(run, spec, prefix, unpruned, pruned, first_teacher=i == 0)
    return PipelineResult(teacher_results, run.rows, students_rows, run.curves, run.plan)


def _train_teacher(run: Stages, name: str, prefix: str, schedule: Schedule,
                   prune: PruneSpec) -> tuple[TeacherResult, KDSource, dict[int, KDSource]]:
    """Trains one teacher (1) and prunes it round by round (2); returns it with the teachers its
    students are distilled from: unpruned, and pruned at each round of `kd_rounds`."""
    config = run.config
    sequences = run.teacher_sequences(f"{prefix}teacher", name, models.scaled_widths(name, config.width_multiplier),
                                      schedule, prune, seed=config.seed, directories={"magnitude": f"{prefix}pruning"},
                                      init_from=config.teacher_checkpoint)
    model, result = sequences.model, sequences.teacher
    dense_masks = masks_lib.init(result.best_variables["params"])
    by_round = {r.round: r for r in sequences.rounds["magnitude"]}
    sources = {0: KDSource(name, 0, 0.0, distill.Teacher(model, result.best_variables), result.test_accuracy,
                           f"{prefix}teacher", None)}
    teacher_rounds = {0: TeacherRound(0, 0.0, result.test_accuracy, dense_masks,
                                      {"round": 0, "sparsity": 0.0, "remaining": masks_lib.total(dense_masks),
                                       **result.summary()})}
    for k, r in by_round.items():
        summary = r.summary()
        teacher_rounds[k] = TeacherRound(k, summary["sparsity"], r.result.test_accuracy, r.masks, summary)
        if k in config.kd_rounds:
            sources[k] = KDSource(name, k, summary["sparsity"], distill.Teacher(model, r.variables, r.masks),
                                  r.result.test_accuracy, f"{prefix}pruning/round_{k:02d}", None)
    # What each teacher a student learns from transfers, on the test split (`pdjax.diagnostics`):
    # kept in its row of the pruning table.
    for k, source in sources.items():
        logits = run.test_logits(model, source.teacher.variables, source.teacher.masks)
        sources[k] = source._replace(logits=logits)
        teacher_rounds[k].summary.update(
            {key: value for key, value in diagnostics.teacher_summary(logits, run.data.test.labels,
                                                                       config.kd.temperature).items()
             if key != "accuracy"})
    pruned = {k: sources[k] for k in config.kd_rounds}
    return TeacherResult(name, f"{prefix}teacher", teacher_rounds), sources[0], pruned


def _train_students(run: Stages, spec: StudentSpec, prefix: str, unpruned: KDSource,
                    pruned: Mapping[int, KDSource], first_teacher: bool) -> list[StudentRow]:
    """Trains one student spec's arms (3-4) against one teacher's unpruned and pruned rounds."""
    rows = []
    if spec.width_rule is None:
        widths = models.scaled_widths(spec.model, spec.width_multiplier)
        # A fixed-width scratch student does not depend on the teacher: trained once.
        if first_teacher and "scratch" in spec.arms:
            rows.append(_train_arm(run, f"{spec.label}_scratch", spec, widths, "scratch", None, None))
        if "kd_unpruned" in spec.arms:
            rows.append(_train_arm(run, f"{prefix}{spec.label}_kd_unpruned", spec, widths, "kd_unpruned", unpruned,
                                   None))
        for k in run.config.kd_rounds if "kd_pruned" in spec.arms else ():
            rows.append(_train_arm(run, f"{prefix}{spec.label}_kd_round_{k:02d}", spec, widths, "kd_pruned",
                                   pruned[k], None))
        return rows
    for k in run.config.kd_rounds:
        source = pruned[k]
        widths = students_lib.student_widths(spec.model, source.teacher.masks, spec.width_rule,
                                             image_shape=run.data.image_shape,
                                             **run.config.model_options().get(spec.model, {}))
        stem = f"{prefix}{spec.label}_round_{k:02d}"
        if "scratch" in spec.arms:
            rows.append(_train_arm(run, f"{stem}_scratch", spec, widths, "scratch", None, source))
        if "kd_unpruned" in spec.arms:
            rows.append(_train_arm(run, f"{stem}_kd_unpruned", spec, widths, "kd_unpruned", unpruned, source))
        if "kd_pruned" in spec.arms:
            rows.append(_train_arm(run, f"{stem}_kd_pruned", spec, widths, "kd_pruned", source, source))
    return rows


def _train_arm(run: Stages, name: str, spec: StudentSpec, widths: Sequence[int], arm: str,
               source: KDSource | None, derived: KDSource | None) -> StudentRow:
    """Trains one student arm once per seed (distilled from `source`, or from scratch without
    one; `derived`: the pruned teacher its widths come from) and records its row."""
    config = run.config
    accuracies, agreements, kls, params = [], [], [], None
    for seed in config.seeds:
        stage_name = name if len(config.seeds) == 1 else f"{name}_seed{seed}"
        fit_seed = STUDENT_SEED_OFFSET + seed
        if source is None:
            _, result, row = run.train(stage_name, spec.model, widths, spec.scratch, fit_seed, data=run.student_data)
        else:
            model, result, row = run.train(stage_name, spec.model, widths, spec.distill, fit_seed,
                                           data=run.student_data, teacher=source.teacher, kd=config.kd,
                                           teacher_stage=source.stage)
            logits = run.test_logits(model, result.best_variables)
            agreements.append(diagnostics.agreement(logits, source.logits))
            kls.append(diagnostics.kl(source.logits, logits))
        accuracies.append(result.test_accuracy)
        params = row["params"]
    return StudentRow(
        student=spec.label, model=spec.model, widths=tuple(widths), width_rule=spec.width_rule,
        derived_round=None if derived is None else derived.round,
        derived_from_sparsity=None if derived is None else derived.sparsity, arm=arm,
        teacher_model=None if source is None else source.name,
        teacher_round=None if source is None else source.round,
        teacher_sparsity=None if source is None else source.sparsity,
        teacher_test_accuracy=None if source is None else source.test_accuracy,
        student_params=params, test_accuracies=tuple(accuracies), seeds=tuple(config.seeds),
        agreements=tuple(agreements), kls=tuple(kls))


def run_families(config: TwoFamilyConfig, out: str | Path, *, experiment: str, preset: str,
                 run_config: Mapping[str, Any], students: Callable[[str], Sequence[StudentSpec]],
                 after: Callable[[str, PipelineResult, ImageData], tuple[str, dict[str, Any]]] | None = None,
                 mesh: Mesh | None = None, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Runs `prune_then_distill` for each family of `config` in `out/<family>/`, writes each
    family's report and a top-level index (`report.write`, `report.write_index`).

    Args:
      run_config: the run's config as saved (`{"experiment", "preset", "config"}`).
      students: family name -> its `StudentSpec`s.
      after: (family, result, data) -> (markdown notes, extra JSON) for the family's report.

    Returns:
      Each family's results.json content.
    """
    out = Path(out)
    results = {}
    for name in config.families:
        family = config.family(name)
        data = common.load_data(config, config.data_key(name), out / name)
        result = prune_then_distill(config, out=out / name, data=data, teacher=name, teacher_schedule=family.train,
                                    prune=config.prune_spec(family.prune), students=students(name), mesh=mesh,
                                    progress=progress)
        notes, extra = after(name, result, data) if after is not None else ("", {})
        family_config = {**run_config, "family": name, "config": {**run_config["config"], "data": family.data}}
        results[name] = report_lib.write(out / name, result, f"{experiment}: {name}", preset, family_config, data,
                                         notes, extra)
    report_lib.write_index(out, experiment, preset, results)
    return results
