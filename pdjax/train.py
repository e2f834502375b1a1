"""The resumable training loop: `fit`, with its run directory (checkpoints, metrics, the record
of what produced it), stop handling (SIGTERM) and a typed record of what it has done.

The step it runs, the optimizer and evaluation live in `pdjax.steps`; an epoch's pass (batches to
the step, metrics back, the loop's `Progress` record) in `pdjax.feed`; SIGTERM in
`pdjax.stopping`; the record of what produced a stage in `pdjax.provenance`.

Usage:
    schedule = pdjax.train.Schedule(epochs=200, batch_size=128, lr=0.1,
                                    milestones=(60, 120, 160), lr_factor=0.2, weight_decay=5e-4)
    result = pdjax.train.fit(model, data, schedule, workdir="runs/teacher", seed=0)
    result.test_accuracy, result.best_variables
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from jax.sharding import Mesh
from tqdm.auto import tqdm

from pdjax import artifacts, distill, tensorboard
from pdjax import data as data_lib
from pdjax import feed
from pdjax import models, parallel, provenance
from pdjax.provenance import stage_record
from pdjax.stopping import Preempted, StopRequest
from pdjax.checkpoints import Checkpointer, checkpoint_interval, save_tree
from pdjax.files import write_json_atomic, write_jsonl_atomic
# `Schedule` and the step's pieces are `pdjax.steps`'; fit takes a Schedule, so it is importable here too.
from pdjax.feed import PartialEpoch, Progress, place_training_data
from pdjax.steps import (CompiledStep, Schedule, TrainState, evaluate, is_sgd, learning_rate, make_eval_step,
                         make_train_step, sgd, with_learning_rate)
from pdjax.types import Masks, Metrics, PyTree, SpecError, Variables

__all__ = ["FitResult", "Preempted", "Progress", "PartialEpoch", "Schedule", "StopRequest", "checkpoint_interval",
           "fit", "stage_record"]


@dataclasses.dataclass
class FitResult:
    """What a finished `fit` returns.

    Attributes:
      variables: the last epoch's variables (pruning rounds keep these).
      masks: the masks trained under (None for dense training).
      best_variables: the variables of the epoch with the best validation accuracy.
      best_epoch: that epoch (1-based; 0 means the initial variables).
      val_accuracy: its validation accuracy.
      test_accuracy, test_loss: of `best_variables` on the test split.
      history: one dict per epoch (train loss/accuracy, validation accuracy, lr, seconds).
      train_seconds: wall time spent training, summed over resumed runs.
    """

    variables: Variables
    masks: Masks | None
    best_variables: Variables
    best_epoch: int
    val_accuracy: float
    test_accuracy: float
    test_loss: float
    history: list[dict[str, Any]]
    train_seconds: float

    def summary(self) -> dict[str, Any]:
        """The JSON-able part of the result."""
        return {"best_epoch": self.best_epoch, "val_accuracy": self.val_accuracy,
                "test_accuracy": self.test_accuracy, "test_loss": self.test_loss,
                "epochs": len(self.history), "train_seconds": round(self.train_seconds, 2)}


@jax.jit
def _copy(tree: PyTree) -> PyTree:
    # The state is donated to the next step: the best model must own its buffers. One program
    # per tree, not one per leaf shape.
    return jax.tree.map(jnp.copy, tree)


class _Store:
    """Where a fit keeps what it has done: `workdir/` with checkpoints, stage.json (what
    produced the run), metrics.jsonl, result.json and best_variables. With
    `workdir=None` it keeps nothing: the fit trains in memory."""

    def __init__(self, workdir: str | Path | None, restart: bool, record: dict[str, Any],
                 described: dict[str, Any] | None = None):
        self.main = parallel.is_main_process()
        self.workdir = None if workdir is None else Path(workdir)
        self.ckpt: Checkpointer | None = None
        if self.workdir is None:
            return
        if restart:
            parallel.remove_directory(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        # A directory that other inputs produced is refused before anything in it is touched.
        provenance.check_or_write(self.workdir / "stage.json", record, what=str(self.workdir), write=self.main)
        if described is not None and self.main:  # what pdjax.artifacts.load_stage rebuilds the model from
            write_json_atomic(self.workdir / "model.json", described)
        self.ckpt = Checkpointer(self.workdir / "checkpoints")

    @property
    def where(self) -> str:
        return "memory (workdir=None: nothing saved)" if self.ckpt is None else str(self.ckpt.directory)

    def restore(self, template: PyTree) -> tuple[PyTree, dict[str, Any]] | None:
        if self.ckpt is None or self.ckpt.latest_step() is None:
            return None
        return self.ckpt.restore(template)

    def save(self, step: int, tree: PyTree, meta: dict[str, Any]) -> None:
        if self.ckpt is not None:
            self.ckpt.save(step, tree, meta)

    def metrics(self, history: list[dict[str, Any]]) -> None:
        if self.workdir is not None and self.main:
            write_jsonl_atomic(self.workdir / "metrics.jsonl", history)

    def finish(self, best: Variables, summary: dict[str, Any], masks: Masks | None = None) -> None:
        if self.workdir is None:
            return
        if not (self.workdir / "best_variables").exists():
            save_tree(self.workdir / "best_variables", best)
        if masks is not None and not (self.workdir / "masks").exists():
            save_tree(self.workdir / "masks", masks)
        if self.main:
            write_json_atomic(self.workdir / "result.json", summary)

    def __enter__(self) -> "_Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.ckpt is not None:
            self.ckpt.close()


def fit(model: nn.Module, data: data_lib.ImageData, schedule: Schedule, *,
        workdir: str | Path | None = None, seed: int = 0, mesh: Mesh | None = None,
        variables: Variables | None = None, masks: Masks | None = None,
        teacher: distill.Teacher | None = None, kd: distill.KDSpec = distill.KDSpec(),
        optimizer: optax.GradientTransformation | None = None,
        augment: bool = True, select_best: bool = True, eval_batch_size: int = 500,
        name: str = "train", progress: bool = True, log_every: int | None = None, restart: bool = False,
        on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
        on_step: Callable[[int, Metrics], None] | None = None,
        on_variables: Callable[[int, Variables], None] | None = None,
        writer: "tensorboard.Writer | None" = None, checkpoint_seconds: float | None = None,
        data_on_device: bool | None = None, steps_per_dispatch: int = 1) -> FitResult:
    """Trains `model` on `data`, resuming from `workdir` if it holds checkpoints.

    Each epoch: one pass over the shuffled training split, validation on clean images and a
    line in `workdir/metrics.jsonl`; an orbax checkpoint (state + best model) after the epochs
    that end at least `checkpoint_seconds` after the last one, and after the last epoch. SIGTERM
    saves a checkpoint of the current step before stopping. At the end the
    best-validation model is evaluated on the test split and `workdir/result.json` is written.
    Running again with the same arguments continues after the last finished epoch, and a
    finished run returns its result after one test evaluation. Running again with other inputs
    (model, schedule, optimizer, seed, initial variables, masks, teacher, KD settings, data) is
    refused with `pdjax.provenance.StaleRunError` naming what differs: `workdir/stage.json` records
    what produced the run. `restart=True` deletes `workdir` first.

    Args:
      model: a pdjax model.
      data: the data set.
      schedule: epochs, batch size and the default optimizer's settings.
      workdir: directory for checkpoints, metrics and the result; None trains in memory (no
        checkpoints, no files, nothing to resume).
      seed: fixes the initialization (when `variables` is None), data order and augmentation.
      mesh: device mesh; default all devices.
      variables: initial variables; default a fresh initialization from `seed`.
      masks: pruning masks to train under (pruned weights stay exactly zero, whatever the
        optimizer: see `pdjax.masks.masked_optimizer`); None trains densely.
      teacher: distill from this teacher (`pdjax.distill.Teacher`, its masks applied) with the
        KD loss instead of training on the labels alone.
      kd: the distillation loss and its settings (`pdjax.distill.KDSpec`; default the paper's
        KD, T = 10, alpha = 0.95); `KDSpec(loss="teacher_free")` with no teacher trains on the
        teacher-free loss.
      optimizer: any optax optimizer (e.g. `optax.adamw(1e-3)`); default the paper's SGD built
        from `schedule` (`pdjax.steps.sgd`: its lr, milestones, momentum, weight decay).
      augment: random crop and flip on training batches.
      select_best: report (and return as `best_variables`) the best-validation epoch's model;
        False keeps the last epoch's, as pruning rounds do.
      eval_batch_size: batch size for validation and test.
      name: label of the progress bar.
      progress: show a progress bar (first process only).
      log_every: steps between progress-bar metric updates and NaN checks; each one waits for
        the device and fetches the pending steps' metrics together (about 0.4 ms of host CPU).
        None: every 20 steps one step a call (the host then runs at most 20 calls ahead of the
        device; 50 ahead cost 0.16-0.19 ms more host CPU a call on a 2-core CPU), every 5 calls
        with several steps a call (at 20 steps, the fetches were a fifth of the host's time of a
        10-steps-a-call epoch); benchmarks/README.md.
      restart: delete `workdir` and train from the start.
      on_epoch_end: called with (epoch, metrics) after each epoch (and its checkpoint, if one was
        due).
      on_step: called with (global step, that step's metrics as device arrays, not waited for)
        right after each train step is dispatched, before any checkpoint of it (the crash tests
        kill the process from here).
      on_variables: called with (epoch, the model's variables) when a run starts from its
        initial variables (epoch 0) and after each epoch, before that epoch's checkpoint, so a
        resumed run never skips one (`pdjax.pruning.RewindPoint` keeps weight rewinding's point
        this way). Not called for epochs a resumed run had already finished.
      writer: a `pdjax.tensorboard.Writer`: each epoch's metrics and the train loss every
        `log_every` steps, live in TensorBoard (closed when the fit ends).
      data_on_device: the training split on the devices, each step's batch taken there
        (`pdjax.feed`): None (default) when it fits the device budget (`PDJAX_DEVICE_DATA_BYTES`;
        else host batches, the reason printed), True always, False never. The same batches and,
        one step a call, the same numbers either way.
      steps_per_dispatch: train steps per compiled call (data on the devices): 1, or K for a
        `lax.scan` of K steps (the epoch's last call runs what is left); a SIGTERM stops at a
        call's end, resumed exactly; the progress bar, NaN check and TensorBoard at call ends,
        every `log_every` steps (default every 5 calls). On the CPU backend the K steps are
        unrolled (`pdjax.feed.UNROLL_ON`: XLA:CPU ran a step in a loop 7x slower), which gives
        exactly the numbers of K = 1; elsewhere the loop is rolled and XLA compiles its body
        apart from a single step's, so the floats may differ in the last bits
        (benchmarks/README.md).
      checkpoint_seconds: the least time between two epoch checkpoints: a crash (SIGKILL, power
        loss) loses at most this much training plus one epoch, and a resumed run repeats it to
        the same numbers. 0 checkpoints every epoch. Default `$PDJAX_CHECKPOINT_SECONDS`, else
        `pdjax.checkpoints.CHECKPOINT_SECONDS` (saved every epoch, the demo's 93 checkpoints took about 40 s of its
        134 s on a 2-core CPU: benchmarks/README.md).

    Returns:
      A `FitResult`.

    Raises:
      StaleRunError: `workdir` holds a run of other inputs (nothing is changed there).
      SpecError: `checkpoint_seconds` (or `$PDJAX_CHECKPOINT_SECONDS`) is not a number >= 0.
      Preempted: on SIGTERM (a preemption notice), after saving a checkpoint of the last step;
        the same call then resumes from that step, with the same result.
      FloatingPointError: the loss became NaN or Inf (the last good checkpoint is kept).
    """
    if teacher is not None and not kd.uses_teacher:
        raise ValueError(f"kd.loss={kd.loss!r} trains without a teacher: pass teacher=None")
    if not _is_count(steps_per_dispatch):
        raise SpecError(f"steps_per_dispatch={steps_per_dispatch!r} must be an int >= 1")
    if log_every is not None and not _is_count(log_every):
        raise SpecError(f"log_every={log_every!r} must be an int >= 1 (None: 20 steps, or 5 calls)")
    if steps_per_dispatch > 1 and data_on_device is False:
        raise SpecError(f"steps_per_dispatch={steps_per_dispatch} takes its batches on the devices: leave "
                        "data_on_device at None or True")
    mesh = mesh if mesh is not None else parallel.data_mesh()
    parallel.check_batch_size(schedule.batch_size, mesh)
    checkpoint_seconds = checkpoint_interval(checkpoint_seconds)
    steps_per_epoch = len(data.train) // schedule.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch size {schedule.batch_size} exceeds the {len(data.train)} "
                         "training images")

    if variables is None:
        variables = models.init(model, jax.random.key(seed), data.image_shape)
    record = stage_record(model, data, schedule, seed=seed, variables=variables, masks=masks, teacher=teacher,
                          kd=kd, optimizer=optimizer, augment=augment, select_best=select_best,
                          steps_per_dispatch=steps_per_dispatch)
    if optimizer is None:
        optimizer = sgd(schedule)
    state = parallel.replicate(TrainState.create(variables, optimizer, masks), mesh)
    best = _copy(state.variables)
    done = Progress()
    store = _Store(workdir, restart, record, artifacts.describe(model, data, masked=masks is not None))
    restored = store.restore({"state": state, "best": best})
    if restored is not None:
        tree, meta = restored
        state, best, done = tree["state"], tree["best"], Progress.from_meta(meta)
        if done.epoch > schedule.epochs:
            raise ValueError(f"{workdir} holds {done.epoch} epochs but the schedule has {schedule.epochs}")

    resident = place_training_data(data, mesh, data_on_device, steps_per_dispatch, name=name)
    steps_by_count: dict[int, CompiledStep] = {}

    def train_step(count: int) -> CompiledStep:  # one compiled step per steps-per-dispatch count
        if count not in steps_by_count:
            steps_by_count[count] = make_train_step(
                model, optimizer, mesh, mean=data.mean, std=data.std, augment=augment,
                teacher=teacher.model if teacher else None, kd=kd, resident=resident is not None, steps=count,
                unroll=feed.UNROLL_ON.get(jax.default_backend(), False))
        return steps_by_count[count]

    teacher_args = () if teacher is None else (parallel.replicate(teacher.masked_variables(), mesh),)
    eval_step = make_eval_step(model, mesh, mean=data.mean, std=data.std)
    per_call = steps_per_dispatch if resident is not None else 1
    if log_every is None:
        log_every = 20 if per_call == 1 else 5 * per_call
    training = feed.TrainingPass(name=name, data=data, schedule=schedule, seed=seed, mesh=mesh, train_step=train_step,
                             key=parallel.replicate(jax.random.key(seed), mesh), teacher_args=teacher_args,
                             store=store, steps_per_epoch=steps_per_epoch, log_every=log_every, progress=progress,
                             on_step=on_step, writer=writer, resident=resident,
                             steps_per_dispatch=per_call)
    store.metrics(done.history)
    if on_variables is not None and done.epoch == 0 and done.partial is None:
        on_variables(0, state.variables)
    with store, StopRequest() as stop:
        # Every process agrees on a stop request (see pdjax.feed.TrainingPass.run), also after each epoch.
        if parallel.any_process(stop.requested) and done.epoch < schedule.epochs:
            raise stop.honour(f"{name}: stopped by SIGTERM before it started (at epoch {done.epoch}); "
                              "run the same command again to resume")
        last_save = time.monotonic()
        state_lr = None  # the learning rate the state holds, once this run has set it
        for epoch in range(done.epoch, schedule.epochs):
            lr = learning_rate(schedule, epoch)
            # The epoch's learning rate reaches the compiled step as a value in the optimizer state,
            # placed when it changes (at milestones): the steps carry it through unchanged.
            if is_sgd(optimizer) and lr != state_lr:
                state = state._replace(opt_state=with_learning_rate(state.opt_state, parallel.replicate(lr, mesh)))
                state_lr = lr
            state, ran = training.run(state, epoch, done, stop, best)
            validating = time.perf_counter()
            val = evaluate(eval_step, state.variables, data.val, eval_batch_size, mesh) if len(data.val) \
                else {"accuracy": ran.sums["accuracy"] / ran.seen, "loss": ran.sums["loss"] / ran.seen}
            ran.seconds += time.perf_counter() - validating  # an epoch's seconds include its validation
            record = _epoch_record(epoch, lr, ran, val, schedule.batch_size)
            if val["accuracy"] > done.val_accuracy or not select_best:
                best = _copy(state.variables)
                done.best_epoch, done.val_accuracy = epoch + 1, val["accuracy"]
            done.epoch, done.partial = epoch + 1, None
            done.history.append(record)
            done.train_seconds += ran.seconds
            if on_variables is not None:  # before the checkpoint: a resume never skips it
                on_variables(epoch + 1, state.variables)
            # Every process takes the same decision (an orbax save involves all of them).
            step = (epoch + 1) * steps_per_epoch
            saved = epoch + 1 == schedule.epochs or \
                parallel.any_process(stop.requested or time.monotonic() - last_save >= checkpoint_seconds)
            if saved:
                store.save(step, {"state": state, "best": best}, done.to_meta())
                last_save = time.monotonic()
            store.metrics(done.history)
            _report_epoch(name, schedule, record, writer, on_epoch_end)
            if parallel.any_process(stop.requested) and epoch + 1 < schedule.epochs:
                if not saved:  # the request came after the checkpoint decision
                    store.save(step, {"state": state, "best": best}, done.to_meta())
                raise stop.honour(f"{name}: stopped by SIGTERM after epoch {epoch + 1}/{schedule.epochs}; "
                                  f"checkpoint saved in {store.where}; run the same command again "
                                  "to resume")

    if done.best_epoch == 0 and done.val_accuracy < 0 and len(data.val):
        # No epoch ran (epochs=0: a given model is only evaluated).
        done.val_accuracy = evaluate(eval_step, best, data.val, eval_batch_size, mesh)["accuracy"]
    test = evaluate(eval_step, best, data.test, eval_batch_size, mesh)
    result = FitResult(variables=jax.device_get(state.variables), masks=jax.device_get(state.masks),
                       best_variables=jax.device_get(best), best_epoch=done.best_epoch,
                       val_accuracy=done.val_accuracy, test_accuracy=test["accuracy"], test_loss=test["loss"],
                       history=done.history, train_seconds=done.train_seconds)
    store.finish(best, result.summary(), result.masks)
    if writer is not None:
        writer.close()
    return result


def _is_count(value: Any) -> bool:
    """An int >= 1 (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _epoch_record(epoch: int, lr: Any, ran: PartialEpoch, val: Metrics, batch_size: int) -> dict[str, Any]:
    """An epoch's line of metrics.jsonl and of the history."""
    return {"epoch": epoch + 1, "lr": float(lr),
            **{f"train_{k}" if k in ("loss", "accuracy") else k: v / ran.seen for k, v in ran.sums.items()},
            "val_loss": val["loss"], "val_accuracy": val["accuracy"], "seconds": round(ran.seconds, 3),
            "images_per_second": round(ran.seen * batch_size / ran.seconds, 1)}


def _report_epoch(name: str, schedule: Schedule, record: dict[str, Any], writer: Any,
                  on_epoch_end: Callable[[int, dict[str, Any]], None] | None) -> None:
    """An epoch's line on the terminal (first process), in TensorBoard and to `on_epoch_end`."""
    epoch = record["epoch"]
    if parallel.is_main_process():
        tqdm.write(f"{name} epoch {epoch}/{schedule.epochs}: loss {record['train_loss']:.4f} "
                   f"train acc {record['train_accuracy']:.4f} val acc {record['val_accuracy']:.4f} "
                   f"({record['seconds']:.1f}s, {record['images_per_second']:.0f} img/s)")
    if writer is not None:
        writer.epoch(epoch, record)
    if on_epoch_end is not None:
        on_epoch_end(epoch, record)
