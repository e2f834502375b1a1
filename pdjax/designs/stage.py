"""One stage of an experiment design, and a teacher's pruning sequences: what both designs
(`pdjax.designs.prune_distill`, `pdjax.designs.controls`) and notebooks train with.

- `train_stage`: one model trained (or resumed) as a named stage in a run directory, with its
  results-table row.
- `Stages`: the stages of one run, sharing its data, directory, mesh and config (passed whole);
  it keeps every stage's row and validation curve.
- `Stages.teacher_sequences`: a teacher trained, then pruned by one or several criteria
  (magnitude, random, none) with the same rounds and rewinding. `prune.rewind` is read here and
  nowhere else: "weight" keeps the teacher's weights at `prune.rewind_epoch` while it trains and
  rewinds every sequence's rounds to them.
- Seeds: student seed s trains with `fit(seed=STUDENT_SEED_OFFSET + s)`.

Usage:
    stages = pdjax.designs.stage.Stages(config, data, "runs/x")
    model, fitted, row = stages.train("teacher", "vgg19", widths, schedule, seed=0)
    sequences = stages.teacher_sequences("teacher", "vgg19", widths, schedule, config.prune, seed=0,
                                         directories={"magnitude": "pruning", "none": "dense"})
    sequences.rounds["magnitude"][6].masks     # round 7 of magnitude pruning
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
from flax import linen as nn
from jax.sharding import Mesh

from pdjax import artifacts, checkpoints, costs, models, parallel, pruning
from pdjax.designs import common
from pdjax import tensorboard as tensorboard_lib
from pdjax.data import ImageData
from pdjax.pruning import PruneSpec, PruningRound
from pdjax.steps import Schedule
from pdjax.train import FitResult, fit

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


@dataclasses.dataclass(frozen=True)
class Sequences:
    """A trained teacher and its pruning sequences.

    Attributes:
      model: the teacher's module.
      teacher: its fit (`best_variables` is what every sequence starts from).
      row: its stage's results-table row.
      rounds: criterion -> that sequence's rounds, in order (round k at index k - 1).
    """

    model: nn.Module
    teacher: FitResult
    row: dict[str, Any]
    rounds: dict[str, list[PruningRound]]


@dataclasses.dataclass
class Stages:
    """The stages of one run: its config (passed whole: `augment`, `eval_batch_size`,
    `compute_dtype`, `log` and `model_options()` where it has one), data, directory and mesh;
    every stage trained through it adds its results-table row to `rows` and its validation curve
    to `curves`. `student_data` is what students train on (`train(..., data=stages.student_data)`)."""

    config: Any  # a pdjax.designs.common.DesignConfig
    data: ImageData
    out: Path
    mesh: Mesh | None = None
    progress: bool = True
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    curves: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    # A dry run's cost plan (config `dry_run`): per stage and pruning round, its real epochs,
    # training images and training FLOPs per image (`pdjax.costs.plan_rows`).
    plan: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.mesh = self.mesh if self.mesh is not None else parallel.data_mesh()
        # What students train on (`DesignConfig.student_data`): the data, or a subset of its
        # training split; teachers and their pruning rounds train on `data`.
        subset = getattr(self.config, "student_data", None)
        self.student_data = self.data if subset is None else subset(self.data)

    @property
    def logs(self) -> Path | None:
        return self.out / "tensorboard" if self.config.log == "tensorboard" else None

    def _options(self, model_name: str) -> Mapping[str, Any] | None:
        options = getattr(self.config, "model_options", None)
        return None if options is None else options().get(model_name)

    def train(self, name: str, model_name: str, widths: Sequence[int], schedule: Schedule, seed: int, *,
              model_options: Mapping[str, Any] | None = None, data: ImageData | None = None,
              teacher_stage: str | None = None, compute_dtype: str | None = None,
              **fit_options: Any) -> tuple[Any, FitResult, dict[str, Any]]:
        """Trains (or resumes) stage `name` with the run's shared settings and records it.
        `model_options` default to the config's for `model_name`; `data` to the run's;
        `teacher_stage` (a distilled stage: its teacher's stage directory in the run) goes into
        the row, for `python -m pdjax.cli.diagnose`. A
        distilled stage whose loss needs no teacher (`kd.loss == "teacher_free"`) trains
        without it: every KD arm of a design then trains the same teacher-free student."""
        config = self.config
        kd = fit_options.get("kd")
        if kd is not None and not kd.uses_teacher:
            fit_options.pop("teacher", None)
        options = model_options if model_options is not None else self._options(model_name)
        if getattr(config, "dry_run", False):
            teacher = fit_options.get("teacher")
            self._plan(name, model_name, widths, options, schedule, data is not None and data is self.student_data,
                       teacher=None if teacher is None else teacher.model, compute_dtype=compute_dtype)
            schedule = _two_steps(schedule)
        model, result, row = train_stage(
            name, model_name=model_name, widths=widths, schedule=schedule, seed=seed,
            data=self.data if data is None else data, out=self.out, mesh=self.mesh, augment=config.augment,
            eval_batch_size=config.eval_batch_size, progress=self.progress,
            compute_dtype=compute_dtype or config.compute_dtype,
            tensorboard=self.logs, model_options=options,
            steps_per_dispatch=getattr(config, "steps_per_dispatch", 1), **fit_options)
        if teacher_stage is not None:
            row["teacher_stage"] = teacher_stage
        self.rows.append(row)
        self.curves[name] = [h["val_accuracy"] for h in result.history]
        return model, result, row

    def _plan(self, name: str, model_name: str, widths: Sequence[int], options: Mapping[str, Any] | None,
              schedule: Schedule, student_data: bool, teacher: Any = None, repeats: int = 1,
              compute_dtype: str | None = None) -> None:
        """A dry run's plan row of a stage (or of `repeats` pruning rounds): its real epochs and
        training images, and its training FLOPs per image (3 forward passes, and the teacher's
        one for a distilled stage)."""
        images = common.planned_images(self.data.name, self.config.val_fraction)
        subset = getattr(self.config, "student_train_size", None)
        if student_data and subset is not None and images is not None:
            images = min(images, subset)
        model = models.get(model_name, self.data.num_classes, widths=widths,
                           **({"dtype": compute_dtype or self.config.compute_dtype} | dict(options or {})))
        flops = 3 * self._forward_flops(model) + (0 if teacher is None else self._forward_flops(teacher))
        self.plan.append({"stage": name, "model": model_name, "epochs": schedule.epochs * repeats,
                          "train_images": images, "train_flops_per_image": flops, "teacher": teacher is not None})

    def _forward_flops(self, model: Any) -> float:
        cache = self.__dict__.setdefault("_flops", {})
        if model not in cache:  # XLA counts from shapes: the variables' shapes, not their values
            variables = jax.eval_shape(lambda: models.init(model, jax.random.key(0), self.data.image_shape))
            cache[model] = costs.flops_per_image(model, variables, self.data.image_shape)
        return cache[model]

    def test_logits(self, model: Any, variables: Any, masks: Any = None) -> Any:
        """A model's logits on the run's test split (`pdjax.artifacts.predict`), for
        `pdjax.diagnostics`."""
        return artifacts.predict(model, variables, masks, self.data.test.images, mean=self.data.mean,
                                 std=self.data.std, batch_size=self.config.eval_batch_size)

    def teacher_sequences(self, name: str, model_name: str, widths: Sequence[int], schedule: Schedule,
                          prune: PruneSpec, *, seed: int, directories: Mapping[str, str],
                          model_options: Mapping[str, Any] | None = None,
                          init_from: str | Path | None = None) -> Sequences:
        """Trains (or resumes) a teacher as stage `name` and prunes it once per criterion of
        `directories` (criterion -> its directory in the run; magnitude first, so a random
        sequence keeps, layer by layer, as many weights as the magnitude round of the same
        number), each sequence with `prune`'s rounds, fraction, scope, schedule and rewinding
        and the pruning seed `seed`. With `prune.rewind == "weight"` the teacher keeps its
        weights at `prune.rewind_epoch` (`name/snapshot_<epoch>`) while it trains, and every
        sequence rewinds to them. `init_from`: a trained teacher to take instead of training.

        Raises:
          FileNotFoundError: weight rewinding, and the teacher was trained before without its
            rewind point (restart that stage).
        """
        criteria = sorted(directories, key=lambda c: c != "magnitude")
        dry_run, planned = getattr(self.config, "dry_run", False), prune
        if dry_run:
            prune = dataclasses.replace(prune, schedule=_two_steps(prune.schedule))
        point = None
        if prune.rewind == "weight":
            point = pruning.RewindPoint(prune.rewind_epoch, self.out / name / f"snapshot_{prune.rewind_epoch}")
        model, teacher, row = self.train(name, model_name, widths, schedule, seed, model_options=model_options,
                                         on_variables=point, init_from=init_from)
        rewind_variables = None if point is None else point.variables(teacher.variables)
        if dry_run:  # the plan of every sequence's rounds, after the teacher's
            for criterion in criteria:
                label = f"{planned.rounds} round{'s' * (planned.rounds != 1)}"
                self._plan(f"{directories[criterion]} ({label})", model_name, widths,
                           model_options if model_options is not None else self._options(model_name),
                           planned.schedule, False, repeats=planned.rounds)
        config, rounds, reference = self.config, {}, None
        for criterion in criteria:
            directory = directories[criterion]
            rounds[criterion] = pruning.iterative_pruning(
                model, self.data, dataclasses.replace(prune, criterion=criterion), variables=teacher.best_variables,
                workdir=self.out / directory, rewind_variables=rewind_variables,
                reference=reference if criterion == "random" else None, seed=seed, mesh=self.mesh,
                augment=config.augment, eval_batch_size=config.eval_batch_size, progress=self.progress,
                tensorboard=None if self.logs is None else self.logs / directory,
                steps_per_dispatch=getattr(config, "steps_per_dispatch", 1))
            if criterion == "magnitude":
                reference = [r.masks for r in rounds[criterion]]
        return Sequences(model, teacher, row, rounds)


def _two_steps(schedule: Schedule) -> Schedule:
    """A dry run's schedule: one epoch (two batches of the synthetic data), no milestones."""
    return dataclasses.replace(schedule, epochs=1, milestones=())
