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
        pdjax.pipeline.ExperimentConfig(seeds=(0, 1, 2)), out="runs/x", data=data,
        teacher="vgg19", teacher_schedule=schedule,
        prune=pdjax.pipeline.PruneSpec(schedule=per_round),
        students=[pdjax.pipeline.StudentSpec("student", "vgg11", scratch=schedule, kd=schedule)])
    print(pdjax.pipeline.report(result, "VGG19 -> VGG11"))
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any, ClassVar, Mapping, NamedTuple, Sequence

import jax
from jax.sharding import Mesh

from pdjax import checkpoints, distill, masks as masks_lib, models, parallel, pruning, reports
from pdjax import sparsity, stats, students as students_lib
from pdjax import tensorboard as tensorboard_lib
from pdjax.data import ImageData
from pdjax.train import FitResult, Schedule, fit
from pdjax.models import COMPUTE_DTYPES
from pdjax.tensorboard import LOGS
from pdjax.types import Masks, SpecError


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Fields every prune-then-distill experiment has (PAPER.md's values as defaults)."""

    width_multiplier: float = 1.0  # of the teachers (and of fixed-width students)
    seed: int = 0  # the validation split, the teacher and the pruning
    seeds: tuple[int, ...] = (0,)  # students are trained once per seed (mean and std reported)
    val_fraction: float = 0.1
    max_train: int | None = None  # training images kept (before the validation hold-out)
    max_test: int | None = None
    data_dir: str | None = None  # tensorflow-datasets data directory
    augment: bool = True
    eval_batch_size: int = 500
    prune_rounds: int = 7
    prune_fraction: float = 0.2
    kd_rounds: tuple[int, ...] = (2, 4, 7)  # ~36%, 59%, 79% sparsity at 20% per round
    kd_temperature: float = 10.0
    kd_alpha: float = 0.95
    compute_dtype: str = "float32"  # "bfloat16": mixed precision (parameters stay float32)
    teacher_checkpoint: str | None = None  # a trained teacher (stage dir or saved tree) to use
    log: str = "none"  # "tensorboard": live curves of every stage under <run dir>/tensorboard/

    def __post_init__(self) -> None:
        checks = [
            (self.compute_dtype in COMPUTE_DTYPES, f"compute_dtype={self.compute_dtype!r}: use one of "
                                                   f"{', '.join(COMPUTE_DTYPES)}"),
            (self.width_multiplier > 0, f"width_multiplier={self.width_multiplier} must be > 0"),
            (0 <= self.val_fraction < 1, f"val_fraction={self.val_fraction} must lie in [0, 1)"),
            (len(self.seeds) > 0, "seeds must name at least one seed"),
            (self.kd_temperature > 0, f"kd_temperature={self.kd_temperature} must be > 0"),
            (0 <= self.kd_alpha <= 1, f"kd_alpha={self.kd_alpha} must lie in [0, 1]"),
            (self.eval_batch_size >= 1, f"eval_batch_size={self.eval_batch_size} must be >= 1"),
            (self.log in LOGS, f"log={self.log!r}: use one of {', '.join(LOGS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise SpecError(message)
        self.prune_spec(self.PRUNE_CHECK_SCHEDULE)  # the pruning values, checked where they are owned

    # `pruning.PruneSpec`'s fields under the names of this config's keys (a subclass that has
    # the key sets the field; the others keep PruneSpec's defaults).
    PRUNE_KEYS: ClassVar[dict[str, str]] = {
        "rounds": "prune_rounds", "fraction": "prune_fraction", "scope": "prune_scope", "rewind": "rewind",
        "rewind_epoch": "rewind_epoch", "finetune_lr": "finetune_lr"}
    # Any schedule: PruneSpec checks its other fields, the schedule checks itself.
    PRUNE_CHECK_SCHEDULE: ClassVar[Schedule] = Schedule(epochs=1, batch_size=1, lr=0.1)

    def prune_spec(self, schedule: Schedule) -> pruning.PruneSpec:
        """How this experiment prunes its teacher, each round trained on `schedule`.

        Raises:
          SpecError: a pruning value is out of range, named by this config's key.
        """
        fields = {field: getattr(self, key) for field, key in self.PRUNE_KEYS.items() if hasattr(self, key)}
        try:
            return pruning.PruneSpec(schedule, **fields)
        except SpecError as err:
            message = str(err)
            for field, key in self.PRUNE_KEYS.items():
                if message.startswith(f"prune.{field}="):
                    message = key + message[len(f"prune.{field}"):]
                    break
            raise SpecError(message) from None

    def model_options(self) -> dict[str, dict[str, Any]]:
        """Options of `pdjax.models.get` per architecture (see `prune_then_distill`); none here."""
        return {}


@dataclasses.dataclass(frozen=True)
class ResNetConfig(ExperimentConfig):
    """An experiment with ResNet18 models, whose stem can be narrowed."""

    # None: the paper's 64-wide ResNet stem at every width; a number narrows it in every ResNet18
    # of the run (CPU scale: at 1/16 width the full stem costs 3/4 of the step)
    resnet_stem_width: int | None = None

    def model_options(self) -> dict[str, dict[str, int]]:
        """Options of `pdjax.models.get` per architecture (see `prune_then_distill`)."""
        return {} if self.resnet_stem_width is None else {"resnet18": {"stem_width": self.resnet_stem_width}}


PruneSpec = pruning.PruneSpec  # how each teacher is pruned (its home is pdjax.pruning)


STUDENT_ARMS = ("scratch", "kd_unpruned", "kd_pruned")


@dataclasses.dataclass(frozen=True)
class StudentSpec:
    """One student architecture and its schedules.

    Attributes:
      label: prefix of its stage directories ("student" -> student_scratch/, ...).
      model: its architecture name.
      scratch: schedule when trained from scratch.
      kd: schedule when distilled.
      width_rule: None for the model's own widths times `width_multiplier`; "chain",
        "balanced" or "uniform" to derive the widths from each pruned teacher's masks (see
        `pdjax.students`).
      width_multiplier: scales the fixed widths.
      arms: which of its arms are trained: "scratch", "kd_unpruned" (distilled from the unpruned
        teacher), "kd_pruned" (from each pruned teacher of `kd_rounds`); all three by default.
    """

    label: str
    model: str
    scratch: Schedule
    kd: Schedule
    width_rule: str | None = None
    width_multiplier: float = 1.0
    arms: tuple[str, ...] = STUDENT_ARMS

    def __post_init__(self) -> None:
        unknown = [a for a in self.arms if a not in STUDENT_ARMS]
        if unknown or not self.arms:
            raise ValueError(f"student {self.label!r}: arms {self.arms} must be some of {STUDENT_ARMS}")
        if self.width_rule is not None and self.width_rule not in students_lib.RULES:
            raise ValueError(f"student {self.label!r}: unknown width rule {self.width_rule!r}; "
                             f"known: {', '.join(students_lib.RULES)}")


# Student seed s trains with `fit(seed=STUDENT_SEED_OFFSET + s)`: the teacher uses `teacher_seed`,
# so a student of the teacher's own architecture (self-distillation) never repeats its run.
STUDENT_SEED_OFFSET = 1000


@dataclasses.dataclass(frozen=True)
class TeacherRound:
    """The teacher after one pruning round; round 0 is the unpruned teacher.

    Attributes:
      round: its number (0: unpruned).
      sparsity: the fraction of prunable weights its masks remove.
      test_accuracy: its own (pruning rounds keep their last epoch; round 0 its best).
      masks: its masks (all kept for round 0).
      summary: its row of the pruning table in results.json.
    """

    round: int
    sparsity: float
    test_accuracy: float
    masks: Masks = dataclasses.field(repr=False, compare=False)
    summary: Mapping[str, Any] = dataclasses.field(repr=False, compare=False)

    @property
    def label(self) -> str:
        return "teacher" if self.round == 0 else f"round {self.round} ({self.sparsity:.0%})"


@dataclasses.dataclass(frozen=True)
class TeacherResult:
    """One teacher and its pruning rounds, keyed by round number (0: the unpruned teacher)."""

    name: str  # its architecture
    stage: str  # the teacher's stage name ("teacher", or "<name>/teacher" with several teachers)
    rounds: Mapping[int, TeacherRound]

    def masks_and_labels(self) -> tuple[list[Masks], list[str]]:
        """Every round's masks and label, in round order (for the density tables and plots)."""
        return [r.masks for r in self.rounds.values()], [r.label for r in self.rounds.values()]


@dataclasses.dataclass(frozen=True)
class StudentRow:
    """One student arm, over every seed: the paper's table has a row per arm.

    Attributes:
      student: its `StudentSpec.label`.
      model, widths: its architecture and widths.
      width_rule: the rule its widths come from (None: fixed widths).
      derived_round: the pruning round whose masks gave its widths (None: fixed widths).
      arm: "scratch", "kd_unpruned" or "kd_pruned".
      teacher_model: the architecture it was distilled from (None: from scratch).
      teacher_round: the round of the teacher it was distilled from (0: unpruned; None: scratch).
      test_accuracies, seeds: per seed.
    """

    student: str
    model: str
    widths: tuple[int, ...]
    width_rule: str | None
    derived_round: int | None
    derived_from_sparsity: float | None
    arm: str
    teacher_model: str | None
    teacher_round: int | None
    teacher_sparsity: float | None
    teacher_test_accuracy: float | None
    student_params: int
    test_accuracies: tuple[float, ...]
    seeds: tuple[int, ...]

    @property
    def test_accuracy(self) -> float:
        return statistics.fmean(self.test_accuracies)

    @property
    def test_accuracy_std(self) -> float | None:
        return statistics.stdev(self.test_accuracies) if len(self.test_accuracies) > 1 else None

    @property
    def teacher(self) -> str:
        """The teacher column of the paper's table."""
        if self.teacher_model is None:
            return "none (scratch)"
        return f"{self.teacher_model} {'unpruned' if self.teacher_round == 0 else 'pruned'}"

    def to_json(self) -> dict[str, Any]:
        return {"student": self.student, "model": self.model, "width_rule": self.width_rule,
                "widths": list(self.widths), "derived_from_sparsity": self.derived_from_sparsity,
                "teacher": self.teacher, "teacher_model": self.teacher_model,
                "teacher_sparsity": self.teacher_sparsity, "teacher_test_accuracy": self.teacher_test_accuracy,
                "student_params": self.student_params, "test_accuracy": self.test_accuracy,
                "test_accuracy_std": self.test_accuracy_std, "test_accuracies": list(self.test_accuracies),
                "seeds": list(self.seeds)}


@dataclasses.dataclass
class PipelineResult:
    """What `prune_then_distill` returns; `to_json` is its results.json part."""

    teachers: list[TeacherResult]
    rows: list[dict[str, Any]]  # every trained model (a stage), one row each
    students: list[StudentRow]  # the paper's table: student x teacher kind x sparsity
    curves: dict[str, list[float]]  # validation accuracy per epoch, per stage

    def train_seconds(self) -> dict[str, float]:
        """The stages' training seconds summed by kind: teachers, pruning rounds (round 0 is the
        teacher, counted once), students, and their total. Restores, reports and data loading
        are not in it; nor is whatever else shared the machine taken out."""
        teacher_stages = {t.stage for t in self.teachers}
        teachers = sum(r.get("train_seconds") or 0.0 for r in self.rows if r["stage"] in teacher_stages)
        students = sum(r.get("train_seconds") or 0.0 for r in self.rows if r["stage"] not in teacher_stages)
        pruning = sum(r.summary.get("train_seconds") or 0.0
                      for t in self.teachers for k, r in t.rounds.items() if k > 0)
        return {"teachers": teachers, "pruning": pruning, "students": students,
                "total": teachers + pruning + students}

    def to_json(self) -> dict[str, Any]:
        return {"teachers": [t.name for t in self.teachers], "rows": self.rows,
                "train_seconds": self.train_seconds(),
                "students": [s.to_json() for s in self.students], "comparisons": comparisons(self),
                "pruning": [{"teacher": t.name, **r.summary} for t in self.teachers for r in t.rounds.values()],
                "layer_density": {t.name: {r.label: [dataclasses.asdict(s) for s in sparsity.layer_stats(r.masks)]
                                           for r in t.rounds.values()}
                                  for t in self.teachers}}


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
                       teacher: str | Sequence[str], teacher_schedule: Schedule, prune: PruneSpec,
                       students: Sequence[StudentSpec], mesh: Mesh | None = None, progress: bool = True,
                       restart: bool = False) -> PipelineResult:
    """Runs (or resumes) the whole method for one or several teachers and their students.

    Args:
      config: the settings every experiment shares, passed whole (`ExperimentConfig`
        or an experiment's subclass; its defaults are the paper's): `kd_rounds` (the pruning
        rounds whose teachers are distilled, each in 1..prune.rounds), `width_multiplier` (of the
        teachers), `kd_temperature` and `kd_alpha`, `seeds` (each student is trained once per
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
      prune: how each teacher is pruned.
      students: the students (see `StudentSpec`).
      mesh, progress: as in `pdjax.train.fit`.
      restart: delete `out` first and run every stage from the start. Without it, a stage whose
        directory other inputs produced (another schedule, seed, teacher, data, ...) is refused
        with `pdjax.records.StaleRunError`.

    Returns:
      A `PipelineResult`.
    """
    kd_rounds, seeds, teacher_seed = config.kd_rounds, config.seeds, config.seed
    teacher_width_multiplier, teacher_checkpoint = config.width_multiplier, config.teacher_checkpoint
    kd_temperature, kd_alpha = config.kd_temperature, config.kd_alpha
    augment, eval_batch_size, compute_dtype = config.augment, config.eval_batch_size, config.compute_dtype
    model_options = config.model_options()
    teachers = [teacher] if isinstance(teacher, str) else list(teacher)
    if not teachers or len(set(teachers)) != len(teachers):
        raise ValueError(f"teachers must be distinct architecture names, got {teachers}")
    if teacher_checkpoint is not None and len(teachers) > 1:
        raise ValueError("teacher_checkpoint names one trained teacher; run one teacher with it")
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    if any(not 1 <= k <= prune.rounds for k in kd_rounds):
        raise ValueError(f"kd_rounds {tuple(kd_rounds)} must lie in 1..{prune.rounds} (the pruning rounds)")
    mesh = mesh if mesh is not None else parallel.data_mesh()
    out = Path(out)
    if restart:
        parallel.remove_directory(out)
    logs = out / "tensorboard" if config.log == "tensorboard" else None
    common = dict(data=data, out=out, mesh=mesh, augment=augment, eval_batch_size=eval_batch_size,
                  progress=progress, compute_dtype=compute_dtype, tensorboard=logs)
    rows: list[dict[str, Any]] = []
    curves: dict[str, list[float]] = {}

    def stage(name: str, model_name: str, widths: Sequence[int], schedule: Schedule, seed: int,
              **options: Any):
        model, result, row = train_stage(name, model_name=model_name, widths=widths,
                                         schedule=schedule, seed=seed, model_options=model_options.get(model_name),
                                         **common, **options)
        rows.append(row)
        curves[name] = [h["val_accuracy"] for h in result.history]
        return model, result, row

    def train_teacher(name: str, prefix: str) -> tuple[TeacherResult, KDSource, dict[int, KDSource]]:
        # 1. The teacher.
        point = None
        if prune.rewind == "weight":
            point = pruning.RewindPoint(prune.rewind_epoch, out / f"{prefix}teacher" / f"snapshot_{prune.rewind_epoch}")
        widths = models.scaled_widths(name, teacher_width_multiplier)
        model, result, _ = stage(f"{prefix}teacher", name, widths, teacher_schedule, teacher_seed,
                                 on_variables=point, init_from=teacher_checkpoint)
        rewind_variables = None if point is None else point.variables(result.variables)
        # 2. Pruning.
        rounds = pruning.iterative_pruning(
            model, data, variables=result.best_variables, schedule=prune.schedule,
            rounds=prune.rounds, workdir=out / f"{prefix}pruning", fraction=prune.fraction, scope=prune.scope,
            rewind=prune.rewind, rewind_variables=rewind_variables, finetune_lr=prune.finetune_lr,
            criterion=prune.criterion, seed=teacher_seed, mesh=mesh, augment=augment, eval_batch_size=eval_batch_size, progress=progress,
            tensorboard=None if logs is None else logs / f"{prefix}pruning")
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
                              teacher_rounds[k].test_accuracy) for k in kd_rounds}
        return TeacherResult(name, f"{prefix}teacher", teacher_rounds), unpruned, pruned

    # 3-4. Students.
    student_rows: list[StudentRow] = []

    def train_student(name: str, spec: StudentSpec, widths: Sequence[int], arm: str,
                      source: KDSource | None, derived: KDSource | None) -> None:
        accuracies, params = [], None
        for seed in seeds:
            stage_name = name if len(seeds) == 1 else f"{name}_seed{seed}"
            fit_seed = STUDENT_SEED_OFFSET + seed
            if source is None:
                _, result, row = stage(stage_name, spec.model, widths, spec.scratch, fit_seed)
            else:
                _, result, row = stage(stage_name, spec.model, widths, spec.kd, fit_seed, teacher=source.teacher,
                                       kd_temperature=kd_temperature, kd_alpha=kd_alpha)
            accuracies.append(result.test_accuracy)
            params = row["params"]
        student_rows.append(StudentRow(
            student=spec.label, model=spec.model, widths=tuple(widths), width_rule=spec.width_rule,
            derived_round=None if derived is None else derived.round,
            derived_from_sparsity=None if derived is None else derived.sparsity, arm=arm,
            teacher_model=None if source is None else source.name,
            teacher_round=None if source is None else source.round,
            teacher_sparsity=None if source is None else source.sparsity,
            teacher_test_accuracy=None if source is None else source.test_accuracy,
            student_params=params, test_accuracies=tuple(accuracies), seeds=tuple(seeds)))

    teacher_results = []
    for i, name in enumerate(teachers):
        prefix = "" if len(teachers) == 1 else f"{name}/"
        teacher_result, unpruned, pruned = train_teacher(name, prefix)
        teacher_results.append(teacher_result)
        for spec in students:
            if spec.width_rule is None:
                widths = models.scaled_widths(spec.model, spec.width_multiplier)
                # A fixed-width scratch student does not depend on the teacher: trained once.
                if i == 0 and "scratch" in spec.arms:
                    train_student(f"{spec.label}_scratch", spec, widths, "scratch", None, None)
                if "kd_unpruned" in spec.arms:
                    train_student(f"{prefix}{spec.label}_kd_unpruned", spec, widths, "kd_unpruned", unpruned, None)
                for k in kd_rounds if "kd_pruned" in spec.arms else ():
                    train_student(f"{prefix}{spec.label}_kd_round_{k:02d}", spec, widths, "kd_pruned", pruned[k], None)
            else:
                for k in kd_rounds:
                    source = pruned[k]
                    widths = students_lib.student_widths(spec.model, source.teacher.masks, spec.width_rule,
                                                         image_shape=data.image_shape,
                                                         **model_options.get(spec.model, {}))
                    stem = f"{prefix}{spec.label}_round_{k:02d}"
                    if "scratch" in spec.arms:
                        train_student(f"{stem}_scratch", spec, widths, "scratch", None, source)
                    if "kd_unpruned" in spec.arms:
                        train_student(f"{stem}_kd_unpruned", spec, widths, "kd_unpruned", unpruned, source)
                    if "kd_pruned" in spec.arms:
                        train_student(f"{stem}_kd_pruned", spec, widths, "kd_pruned", source, source)
    return PipelineResult(teacher_results, rows, student_rows, curves)


STAGE_COLUMNS = [("stage", "stage", "s"), ("model", "model", "s"), ("params", "params", ","),
                 ("best_epoch", "best epoch", "d"), ("val_accuracy", "val acc", ".4f"),
                 ("test_accuracy", "test acc", ".4f"), ("train_seconds", "train s", ".1f")]
PRUNING_COLUMNS = [("teacher", "teacher", "s"), ("round", "round", "d"), ("sparsity", "sparsity", ".3f"),
                   ("remaining", "remaining weights", ","), ("val_accuracy", "val acc", ".4f"),
                   ("test_accuracy", "teacher test acc", ".4f"), ("train_seconds", "train s", ".1f")]
COMPARISON_COLUMNS = [("student", "student", "s"), ("arm", "arm", "s"), ("baseline", "compared with", "s"),
                      ("mean", "mean diff", "+.4f"), ("std", "± std", ".4f"), ("record", "wins/losses/ties", "s"),
                      ("t", "paired t", ".2f"), ("p", "p (t-test)", ".3f"), ("sign_p", "p (sign test)", ".3f"),
                      ("verdict", "verdict", "s")]


def _arm_label(row: StudentRow) -> str:
    if row.teacher_model is None:
        return "scratch"
    if row.teacher_round == 0:
        return f"KD from {row.teacher_model} unpruned"
    return f"KD from {row.teacher_model} pruned {row.teacher_sparsity:.0%}"


def student_name(model: str, width_rule: str | None, derived_from_sparsity: float | None) -> str:
    """A student's name in reports: its model, and for widths derived from a pruned teacher's
    sparsity the rule and that sparsity ("vgg19 chain st36"), as one run can hold several."""
    if derived_from_sparsity is None:
        return model
    return f"{model} {width_rule} st{round(100 * derived_from_sparsity)}"


def _student_label(row: StudentRow) -> str:
    label = student_name(row.model, row.width_rule, row.derived_from_sparsity)
    return label if row.derived_from_sparsity is None else f"{label} {row.widths}"


def comparisons(result: PipelineResult) -> list[dict[str, Any]]:
    """Seed-by-seed comparisons of the student arms (see `pdjax.stats.paired`).

    Among students of the same architecture and widths: each KD-from-pruned arm against
    KD from the same teacher unpruned, and each KD arm against scratch. Among students derived
    from the same pruned teacher by different width rules: each other rule's arm against the
    chain rule's student in the same arm (same teacher, or both from scratch). Differences are
    test accuracy of the arm minus that of the arm it is compared with, per seed.
    """
    groups: dict[tuple, list[StudentRow]] = {}
    for row in result.students:
        groups.setdefault((row.student, row.model, row.widths), []).append(row)
    out = []

    def compare(arm: StudentRow, baseline: StudentRow, baseline_label: str | None = None) -> None:
        c = stats.paired(list(arm.test_accuracies), list(baseline.test_accuracies))
        out.append({"student": _student_label(arm), "arm": _arm_label(arm),
                    "baseline": baseline_label or _arm_label(baseline),
                    "differences": list(c.differences), "mean": c.mean, "std": c.std,
                    "wins": c.wins, "losses": c.losses, "ties": c.ties,
                    "record": f"{c.wins}/{c.losses}/{c.ties}", "t": c.t, "p": c.p, "sign_p": c.sign_p,
                    "verdict": c.verdict, "seeds": list(arm.seeds)})

    for rows in groups.values():
        scratch = next((r for r in rows if r.arm == "scratch"), None)
        for row in rows:
            if row.arm == "kd_pruned":
                unpruned = next((r for r in rows if r.arm == "kd_unpruned" and r.teacher_model == row.teacher_model),
                                None)
                if unpruned is not None:
                    compare(row, unpruned)
            if row.arm != "scratch" and scratch is not None:
                compare(row, scratch)
    chain = {(r.model, r.derived_round, r.arm, r.teacher_model): r for r in result.students if r.width_rule == "chain"}
    for row in result.students:
        if row.width_rule in (None, "chain"):
            continue
        baseline = chain.get((row.model, row.derived_round, row.arm, row.teacher_model))
        if baseline is not None:
            compare(row, baseline, f"{_student_label(baseline)}, same arm")
    return out


def student_columns(result: PipelineResult) -> list[reports.Column]:
    columns = [("model", "student", "s")]
    if any(r.derived_from_sparsity is not None for r in result.students):
        columns += [("width_rule", "width rule", "s"), ("derived_from_sparsity", "widths from sparsity", ".2f")]
    columns += [("teacher", "teacher", "s"), ("teacher_sparsity", "teacher sparsity", ".3f"),
                ("teacher_test_accuracy", "teacher test acc", ".4f"),
                ("student_params", "student params", ","), ("test_accuracy", "student test acc", ".4f")]
    if any(r.test_accuracy_std is not None for r in result.students):
        columns += [("test_accuracy_std", "± std", ".4f"), ("per_seed", "per seed", "s")]
    return columns


def student_table(result: PipelineResult) -> str:
    rows = [{**r.to_json(), "per_seed": ", ".join(f"{a:.4f}" for a in r.test_accuracies)} for r in result.students]
    return reports.markdown_table(rows, student_columns(result))


def report(result: PipelineResult, title: str, notes: str = "") -> str:
    """The markdown report: students (the paper's table), their seed-by-seed comparisons,
    pruning rounds, every stage, and the per-layer density of every round."""
    pruning_rows = [{"teacher": t.name, **r.summary} for t in result.teachers for r in t.rounds.values()]
    n_seeds = len(result.students[0].seeds) if result.students else 0
    text = (f"# {title}\n\n{notes}"
            "Test accuracy is that of the epoch with the best validation accuracy, except in pruning "
            "rounds, which keep their last epoch (round 0 is the unpruned teacher).\n\n"
            f"## Students\n\nMean over {n_seeds} seed(s); ± is the standard deviation over seeds.\n\n"
            f"{student_table(result)}\n"
            "## Seed-by-seed comparisons\n\nDifferences in student test accuracy (arm minus the arm it "
            "is compared with) over the same seeds (same initialisation and data order); paired t-test "
            "and two-sided sign test.\n\n"
            f"{reports.markdown_table(comparisons(result), COMPARISON_COLUMNS)}\n"
            f"## Pruning the teachers\n\n{reports.markdown_table(pruning_rows, PRUNING_COLUMNS)}\n"
            f"## Every trained model\n\n{reports.markdown_table(result.rows, STAGE_COLUMNS)}\n"
            f"{_time_note(result.train_seconds())}\n\n")
    for t in result.teachers:
        text += (f"## Per-layer density of the {t.name} teacher's masks\n\n"
                 f"{sparsity.report_table(*t.masks_and_labels())}\n")
    return text


def _time_note(seconds: Mapping[str, float]) -> str:
    return (f"Training time, the stages' `train s` summed: teachers {seconds['teachers']:,.0f} s, pruning "
            f"rounds {seconds['pruning']:,.0f} s, students {seconds['students']:,.0f} s; "
            f"{seconds['total']:,.0f} s ({seconds['total'] / 3600:.2f} h) in all. Data loading, "
            "restores and reports are not in it; another process on the same cores would lengthen it.")


def mean_over_seeds(curves: Mapping[str, Sequence[float]]) -> dict[str, list[float]]:
    """One curve per stage name without its `_seed<s>` suffix: the mean over that stage's seeds,
    epoch by epoch (over the epochs every seed has). A stage alone in its group keeps its curve
    and name."""
    groups: dict[str, list[tuple[str, Sequence[float]]]] = {}
    for name, ys in curves.items():
        stem, _, seed = name.rpartition("_seed")
        groups.setdefault(stem if stem and seed.isdigit() else name, []).append((name, ys))
    out = {}
    for stem, members in groups.items():
        if len(members) == 1:
            out[members[0][0]] = list(members[0][1])
        else:
            n = min(len(ys) for _, ys in members)
            out[f"{stem} (mean of {len(members)} seeds)"] = [statistics.fmean(ys[i] for _, ys in members)
                                                            for i in range(n)]
    return out


def plot(out: str | Path, result: PipelineResult, title: str) -> None:
    """Writes curves.png, pruning_density.png (one per teacher with several:
    pruning_density_<teacher>.png), teacher_vs_sparsity.png and student_vs_teacher_sparsity.png
    (mean over seeds with std error bars; a fixed-width scratch student as a band) in `out`."""
    out = Path(out)
    reports.plot_curves(out / "curves.png", mean_over_seeds(result.curves), xlabel="epoch",
                        ylabel="validation accuracy", title=title)
    for t in result.teachers:
        name = "pruning_density.png" if len(result.teachers) == 1 else f"pruning_density_{t.name}.png"
        sparsity.plot_density(out / name, *t.masks_and_labels(), title=f"{t.name}: per-layer density by round")
    teacher_series = {t.name: ([r.sparsity for r in t.rounds.values()], [r.test_accuracy for r in t.rounds.values()])
                      for t in result.teachers}
    reports.plot_series(out / "teacher_vs_sparsity.png", teacher_series, xlabel="sparsity",
                        ylabel="teacher test accuracy", title=title)
    series: dict[str, tuple[list[float], list[float]]] = {}
    errors: dict[str, list[float]] = {}
    bands: dict[str, tuple[float, float]] = {}
    for r in result.students:
        derived = r.derived_from_sparsity is not None
        if r.arm == "scratch" and not derived:
            bands[f"{r.model} scratch (mean ± std)"] = (r.test_accuracy, r.test_accuracy_std or 0.0)
            continue
        x = r.derived_from_sparsity if derived else r.teacher_sparsity
        if r.arm == "scratch":
            kind = "scratch"
        elif derived and r.arm == "kd_unpruned":
            kind = f"KD from {r.teacher_model} unpruned"
        else:
            kind = f"KD from {r.teacher_model}"
        label = f"{r.model} {r.width_rule} {kind}" if derived else f"{r.model} {kind}"
        xs, ys = series.setdefault(label, ([], []))
        xs.append(x)
        ys.append(r.test_accuracy)
        errors.setdefault(label, []).append(r.test_accuracy_std or 0.0)
    derived = any(r.derived_from_sparsity is not None for r in result.students)
    # Beside the students, each teacher's own test accuracy per round (pruning rounds keep
    # their last epoch).
    reports.plot_panels(out / "student_vs_teacher_sparsity.png",
                        [reports.Panel(series, "student test accuracy (mean ± std over seeds)", errors, bands),
                         reports.Panel(teacher_series, "teacher test accuracy")],
                        xlabel=("sparsity of the teacher the widths come from" if derived else "teacher sparsity"),
                        title=title)
