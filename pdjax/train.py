"""SGD training: optimizer, one jitted train step and eval step over a mesh, and the fit loop.

Usage:
    schedule = pdjax.train.Schedule(epochs=200, batch_size=128, lr=0.1,
                                    milestones=(60, 120, 160), lr_factor=0.2, weight_decay=5e-4)
    result = pdjax.train.fit(model, data, schedule, workdir="runs/teacher", seed=0)
    result.test_accuracy, result.best_variables
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from jax.sharding import Mesh
from tqdm.auto import tqdm

from pdjax import data as data_lib
from pdjax import artifacts, distill, tensorboard
from pdjax import masks as masks_lib
from pdjax import models, parallel, records
from pdjax.checkpoints import Checkpointer, save_tree
from pdjax.files import write_json_atomic, write_jsonl_atomic
from pdjax.types import Array, Masks, Metrics, Params, PRNGKey, PyTree, SpecError, Variables, check


@dataclasses.dataclass(frozen=True)
class Schedule:
    """One training stage's hyperparameters (a row of PAPER.md's training table).

    The learning rate is multiplied by `lr_factor` at each epoch in `milestones`.
    """

    epochs: int
    batch_size: int
    lr: float
    milestones: tuple[int, ...] = ()
    lr_factor: float = 0.1
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = True

    def __post_init__(self) -> None:
        check([
            (self.epochs >= 0, f"epochs={self.epochs} must be >= 0"),
            (self.batch_size >= 1, f"batch_size={self.batch_size} must be >= 1"),
            (self.lr >= 0, f"lr={self.lr} must be >= 0"),
            # A milestone at 0 would scale every epoch, one at or after the last none; 0 epochs
            # (a given model, evaluated) train at no learning rate.
            (self.epochs == 0 or all(1 <= m < self.epochs for m in self.milestones),
             f"milestones={self.milestones} must lie in 1..{self.epochs - 1} (epochs={self.epochs})"),
            (self.lr_factor > 0, f"lr_factor={self.lr_factor} must be > 0"),
            (self.weight_decay >= 0, f"weight_decay={self.weight_decay} must be >= 0"),
            (0 <= self.momentum < 1, f"momentum={self.momentum} must lie in [0, 1)"),
        ])


def learning_rate(schedule: Schedule, epoch: int) -> np.float32:
    """The learning rate of (0-based) `epoch`: `lr` times `lr_factor` for every milestone passed.

    Computed on the host in float32, one rounding per milestone, exactly as optax's
    `piecewise_constant_schedule` computes it inside a step, so moving it out of the compiled
    step changed no bit of training."""
    value = np.float32(schedule.lr)
    for milestone in sorted(schedule.milestones):
        if epoch >= milestone:
            value = np.float32(np.float32(schedule.lr_factor) * value)
    return value


def _sgd_rule(learning_rate: Any, weight_decay: Any, momentum: Any, *,
              nesterov: bool) -> optax.GradientTransformation:
    # optax.sgd's chain (trace, then the learning rate) after the weight decay; a momentum of 0
    # leaves the gradient exactly as it is (g + 0 * trace).
    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.trace(decay=momentum, nesterov=nesterov),
                       optax.scale_by_learning_rate(learning_rate))


@functools.cache
def _sgd(nesterov: bool) -> optax.GradientTransformationExtraArgs:
    # One update function per nesterov flag: every schedule's SGD shares it, so one compiled
    # train step serves them all (the numbers live in the optimizer state).
    return optax.inject_hyperparams(functools.partial(_sgd_rule, nesterov=nesterov))(
        learning_rate=0.0, weight_decay=0.0, momentum=0.0)


SGD_HYPERPARAMS = ("learning_rate", "weight_decay", "momentum")


def sgd(schedule: Schedule) -> optax.GradientTransformationExtraArgs:
    """SGD with (Nesterov) momentum and weight decay added to the gradient, as PyTorch's SGD.

    The learning rate, weight decay and momentum are values in the optimizer state
    (`optax.inject_hyperparams`), not constants of the compiled step: `fit` sets each epoch's
    learning rate there (`with_learning_rate`), so a new schedule, a pruning round's rewound
    one or a notebook cell's other learning rate reuses the same compiled train step. `init`
    starts them at the schedule's `lr`, `weight_decay` and `momentum`.
    """
    rule = _sgd(bool(schedule.nesterov and schedule.momentum))
    values = {"learning_rate": schedule.lr, "weight_decay": schedule.weight_decay, "momentum": schedule.momentum}

    def init(params: Params) -> optax.OptState:
        state = rule.init(params)
        return state._replace(hyperparams={k: jnp.asarray(np.float32(values[k])) for k in state.hyperparams})

    return optax.GradientTransformationExtraArgs(init, rule.update)


def is_sgd(optimizer: optax.GradientTransformation) -> bool:
    """Whether `optimizer` is pdjax's `sgd` (its learning rate is set by `fit` each epoch)."""
    return optimizer.update is _sgd(False).update or optimizer.update is _sgd(True).update


def with_learning_rate(opt_state: optax.OptState, lr: Any) -> optax.OptState:
    """`sgd`'s optimizer state with its learning rate set to `lr` (a float32 scalar array,
    replicated like the state)."""
    return opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": lr})


def _masked_init_eager(params: Params, masks: Masks | None, optimizer: optax.GradientTransformation):
    params = masks_lib.apply(params, masks)
    return params, optimizer.init(params)


_masked_init_jitted = jax.jit(_masked_init_eager, static_argnums=2)


def _masked_init(params: Params, masks: Masks | None, optimizer: optax.GradientTransformation):
    """Masked parameters and the optimizer's initial state: one program (eagerly, every leaf
    shape compiled one of its own in every new process). An optimizer jit cannot take as a
    static argument (not hashable) is initialised eagerly, as before."""
    try:
        hash(optimizer)
    except TypeError:
        return _masked_init_eager(params, masks, optimizer)
    return _masked_init_jitted(params, masks, optimizer)


class TrainState(NamedTuple):
    """Everything a training step updates; a plain pytree.

    With `masks` (a mask tree, see `pdjax.masks`), the parameters start masked, the forward pass
    uses weight x mask, and the train step's optimizer is wrapped by
    `pdjax.masks.masked_optimizer`, which zeroes the updates of pruned weights: they stay exactly
    zero whatever the optimizer (momentum, weight decay, adam) does. `masks=None` trains densely.
    """

    step: Array
    params: Params
    batch_stats: PyTree
    opt_state: optax.OptState
    masks: Masks | None = None

    @classmethod
    def create(cls, variables: Variables, optimizer: optax.GradientTransformation,
               masks: Masks | None = None) -> "TrainState":
        if masks is not None:
            masks_lib.check(variables["params"], masks)
        params, opt_state = _masked_init(variables["params"], masks, optimizer)
        return cls(jnp.asarray(np.int32(0)), params, variables.get("batch_stats", {}), opt_state, masks)

    @property
    def variables(self) -> Variables:
        return {"params": self.params, "batch_stats": self.batch_stats}


def cross_entropy(logits: Array, labels: Array) -> Array:
    """Per-example softmax cross-entropy with integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


class CompiledStep:
    """A step function jitted once; `traces` counts how often JAX traced it."""

    def __init__(self, fn: Callable[..., Any], **jit_kwargs: Any):
        self.traces = 0

        def traced(*args: Any) -> Any:
            self.traces += 1
            return fn(*args)

        self._jitted = jax.jit(traced, **jit_kwargs)

    def __call__(self, *args: Any) -> Any:
        return self._jitted(*args)


def prepare_images(images: Array, key: PRNGKey | None, *, mean: Any, std: Any,
                   augment: bool) -> Array:
    """uint8 batch -> augmented (if `augment` and a key is given), normalized float32 batch."""
    if augment and key is not None:
        images = data_lib.random_crop_flip(images, key)
    return data_lib.normalize(images, mean, std)


_STEPS: collections.OrderedDict[Any, CompiledStep] = collections.OrderedDict()
_STEPS_KEPT = 16


def _reused(key: tuple, build: Callable[[], CompiledStep]) -> CompiledStep:
    """The step built earlier for the same `key` in this process, else `build()` (kept for the
    next caller: the last `_STEPS_KEPT` steps)."""
    try:
        hash(key)
    except TypeError:  # a module with unhashable settings: built each time
        return build()
    if key in _STEPS:
        _STEPS.move_to_end(key)
        return _STEPS[key]
    step = _STEPS[key] = build()
    while len(_STEPS) > _STEPS_KEPT:
        _STEPS.popitem(last=False)
    return step


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in np.ravel(values))


def make_train_step(model: nn.Module, optimizer: optax.GradientTransformation, mesh: Mesh, *,
                    mean: Any, std: Any, augment: bool = True, teacher: nn.Module | None = None,
                    temperature: float = distill.TEMPERATURE, alpha: float = distill.ALPHA) -> CompiledStep:
    """Builds the train step, jitted over `mesh`; the same arguments in the same process (the
    same model, mesh, normalisation, teacher architecture and optimizer update rule: every
    `sgd` schedule shares one) return the step already built, so it is traced and compiled
    once.

    Without a teacher: `step(state, images, labels, key) -> (state, metrics)`, cross-entropy.
    With `teacher` (a module): `step(state, images, labels, key, teacher_variables)`, the KD
    loss of `pdjax.distill.kd_loss`; the teacher sees the same augmented batch as the student,
    in evaluation mode, under `stop_gradient`. Its variables are an argument (pass them with
    masks applied), so one compiled step serves every teacher of the same shapes.

    `images` (uint8) and `labels` are sharded on the batch axis; the state is replicated and
    donated. The step's randomness (augmentation, dropout) is `fold_in(key, state.step)`, so a
    resumed run draws exactly what an uninterrupted one would. Metrics: `loss`, `accuracy`,
    and with a teacher `kd_loss`, `ce_loss`, `teacher_accuracy`.
    """

    key = ("train", model, optimizer.update, mesh, _floats(mean), _floats(std), augment, teacher,
           float(temperature), float(alpha))
    return _reused(key, lambda: _build_train_step(model, optimizer, mesh, mean=mean, std=std, augment=augment,
                                                  teacher=teacher, temperature=temperature, alpha=alpha))


def _build_train_step(model: nn.Module, optimizer: optax.GradientTransformation, mesh: Mesh, *, mean: Any,
                      std: Any, augment: bool, teacher: nn.Module | None, temperature: float,
                      alpha: float) -> CompiledStep:
    optimizer = masks_lib.masked_optimizer(optimizer)

    def step(state: TrainState, images: Array, labels: Array, key: PRNGKey,
             teacher_variables: Variables | None = None):
        step_key = jax.random.fold_in(key, state.step)
        augment_key, dropout_key = jax.random.split(step_key)
        x = prepare_images(images, augment_key, mean=mean, std=std, augment=augment)
        teacher_logits = None
        if teacher is not None:
            teacher_logits = jax.lax.stop_gradient(teacher.apply(teacher_variables, x, train=False))

        def loss_fn(params: Params):
            masked = masks_lib.apply(params, state.masks)
            logits, updates = model.apply({"params": masked, "batch_stats": state.batch_stats}, x,
                                          train=True, mutable=["batch_stats"],
                                          rngs={"dropout": dropout_key})
            if teacher_logits is None:
                return cross_entropy(logits, labels).mean(), (logits, updates, {})
            parts = distill.kd_loss(logits, teacher_logits, labels, temperature, alpha)
            return parts.total, (logits, updates, {"kd_loss": parts.kd, "ce_loss": parts.ce})

        (loss, (logits, updates, parts)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        deltas, opt_state = optimizer.update(grads, state.opt_state, state.params, masks=state.masks)
        params = optax.apply_updates(state.params, deltas)
        new_state = TrainState(state.step + 1, params, updates.get("batch_stats", {}), opt_state,
                               state.masks)
        metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels), **parts}
        if teacher_logits is not None:
            metrics["teacher_accuracy"] = jnp.mean(jnp.argmax(teacher_logits, -1) == labels)
        return new_state, metrics

    rep, batch = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    if teacher is None:
        return CompiledStep(lambda state, images, labels, key: step(state, images, labels, key),
                            in_shardings=(rep, batch, batch, rep), out_shardings=(rep, rep),
                            donate_argnums=(0,))
    return CompiledStep(step, in_shardings=(rep, batch, batch, rep, rep), out_shardings=(rep, rep),
                        donate_argnums=(0,))


def make_eval_step(model: nn.Module, mesh: Mesh, *, mean: Any, std: Any) -> CompiledStep:
    """Builds `eval(variables, images, labels, weights) -> sums` (loss, correct, count); built
    once per model, mesh and normalisation in a process, like `make_train_step`."""
    return _reused(("eval", model, mesh, _floats(mean), _floats(std)),
                   lambda: _build_eval_step(model, mesh, mean=mean, std=std))


def _build_eval_step(model: nn.Module, mesh: Mesh, *, mean: Any, std: Any) -> CompiledStep:

    def step(variables: Variables, images: Array, labels: Array, weights: Array):
        x = prepare_images(images, None, mean=mean, std=std, augment=False)
        logits = model.apply(variables, x, train=False)
        correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
        return {"loss": jnp.sum(cross_entropy(logits, labels) * weights),
                "correct": jnp.sum(correct * weights), "count": jnp.sum(weights)}

    rep, batch = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    return CompiledStep(step, in_shardings=(rep, batch, batch, batch), out_shardings=rep)


def evaluate(eval_step: CompiledStep, variables: Variables, split: data_lib.Split,
             batch_size: int, mesh: Mesh) -> Metrics:
    """Accuracy and mean loss of `variables` on a whole split (clean images)."""
    n = mesh.devices.size  # every device of every process: a global batch splits over them all
    batch_size = math.ceil(min(batch_size, len(split)) / n) * n
    totals = None
    for batch in data_lib.eval_batches(split, batch_size):
        sums = eval_step(variables, *parallel.put_global_batch(batch, mesh))
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    totals = jax.device_get(totals)
    return {"accuracy": float(totals["correct"] / totals["count"]),
            "loss": float(totals["loss"] / totals["count"])}


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


class Preempted(RuntimeError):
    """Training stopped on SIGTERM after saving a checkpoint; the same call resumes it."""


class StopRequest:
    """While active (a `with` block in the main thread), SIGTERM sets `StopRequest.requested`
    instead of killing the process, so that training stops at its next checkpoint. The flag is
    process-wide: a notice that arrives between stages (or during an evaluation) stops the next
    `fit` as soon as it can save. `pdjax.cli.runs.run_cli` keeps it active for a whole experiment.
    Elsewhere it does nothing."""

    requested = False
    _depth = 0
    _previous: Any = None

    @staticmethod
    def _handle(signum: int, frame: Any) -> None:
        StopRequest.requested = True

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            if StopRequest._depth == 0:
                StopRequest._previous = signal.signal(signal.SIGTERM, StopRequest._handle)
            StopRequest._depth += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        if threading.current_thread() is threading.main_thread() and StopRequest._depth > 0:
            StopRequest._depth -= 1
            if StopRequest._depth == 0:
                signal.signal(signal.SIGTERM, StopRequest._previous)
                StopRequest._previous = None

    @staticmethod
    def honour(message: str) -> Preempted:
        """Clears the request and returns the `Preempted` to raise."""
        StopRequest.requested = False
        return Preempted(message)


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
        records.check_or_write(self.workdir / "stage.json", record, what=str(self.workdir), write=self.main)
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


@dataclasses.dataclass
class _TrainingPass:
    """One epoch's pass over the training split, with what every epoch of a `fit` shares: the
    compiled step, progress bar, metric sums (checked for NaN as they arrive) and the stop
    request, which saves a checkpoint of the current step and raises `Preempted`."""

    name: str
    data: data_lib.ImageData
    schedule: Schedule
    seed: int
    mesh: Mesh
    train_step: CompiledStep
    key: Any
    teacher_args: tuple
    store: "_Store"
    steps_per_epoch: int
    log_every: int
    progress: bool
    on_step: Callable[[int, Metrics], None] | None
    writer: Any = None  # a pdjax.tensorboard.Writer

    def run(self, state: TrainState, epoch: int, partial: dict[str, Any], stop: "StopRequest",
            best: Variables, meta: dict[str, Any]) -> tuple[TrainState, dict[str, float], int, float]:
        """Trains epoch `epoch` from batch `partial["batch"]` (a run stopped mid-epoch resumes at
        the batch after the last one it did). Returns (state, metric sums, steps seen, start time)."""
        steps_per_epoch, single_process = self.steps_per_epoch, jax.process_count() == 1
        start = time.perf_counter() - partial["seconds"]
        bar = tqdm(total=steps_per_epoch, initial=partial["batch"],
                   desc=f"{self.name} {epoch + 1}/{self.schedule.epochs}",
                   disable=not (self.progress and parallel.is_main_process()), leave=False, dynamic_ncols=True)
        pending: list[Metrics] = []
        sums: dict[str, float] = dict(partial["sums"])
        seen = partial["seen"]

        def collect(upto: int) -> None:
            nonlocal pending, seen
            fetched = jax.device_get(pending)
            for j, m in enumerate(fetched):
                if not np.isfinite(m["loss"]):
                    raise FloatingPointError(
                        f"{self.name}: loss is {m['loss']} at epoch {epoch + 1}, step "
                        f"{epoch * steps_per_epoch + upto - len(fetched) + j + 1}; the last good "
                        f"checkpoint is epoch {meta['epoch']} in {self.store.where}")
                for k, v in m.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
            if self.writer is not None and fetched:
                self.writer.step(epoch * steps_per_epoch + upto,
                                 {"train_loss": sum(float(m["loss"]) for m in fetched) / len(fetched)})
            seen += len(fetched)
            pending = []
            bar.update(len(fetched))

        batches = data_lib.train_batches(self.data.train, self.schedule.batch_size, self.seed, epoch,
                                         start_batch=partial["batch"])
        for i, batch in enumerate(batches, start=partial["batch"]):
            state, metrics = self.train_step(state, *parallel.put_global_batch(batch, self.mesh), self.key,
                                             *self.teacher_args)
            pending.append(metrics)
            global_step = epoch * steps_per_epoch + i + 1
            if self.on_step is not None:
                self.on_step(global_step, metrics)
            # With several processes the stop request is agreed (a SIGTERM may reach only one of
            # them): all stop at the same step. One process checks every step; several every
            # `log_every` steps, a small all-gather each time.
            if (single_process or (i + 1) % self.log_every == 0) and parallel.any_process(stop.requested):
                collect(i + 1)
                bar.close()
                meta["partial"] = {"batch": i + 1, "sums": sums, "seen": seen,
                                   "seconds": time.perf_counter() - start}
                self.store.save(global_step, {"state": state, "best": best}, meta)
                raise stop.honour(f"{self.name}: stopped by SIGTERM at epoch {epoch + 1}, batch "
                                  f"{i + 1}/{steps_per_epoch}; checkpoint saved in {self.store.where}; "
                                  "run the same command again to resume")
            if (i + 1) % self.log_every == 0 or i + 1 == steps_per_epoch:
                collect(i + 1)
                elapsed = time.perf_counter() - start
                bar.set_postfix(loss=f"{sums['loss'] / seen:.3f}", acc=f"{sums['accuracy'] / seen:.3f}",
                                img_s=f"{seen * self.schedule.batch_size / elapsed:.0f}")
        bar.close()
        return state, sums, seen, start


def _optimizer_fingerprint(optimizer: optax.GradientTransformation, params: Params) -> str:
    """A user optimizer has no readable settings: it is known by the digest of its first two
    updates of `params` for a fixed gradient (a changed learning rate, decay or moment shows)."""
    grads = jax.tree.map(lambda p: jnp.full(jnp.shape(p), 0.01, jnp.result_type(p)), params)
    opt_state = optimizer.init(params)
    updates = []
    for _ in range(2):
        u, opt_state = optimizer.update(grads, opt_state, params)
        updates.append(u)
    return f"custom optax optimizer {records.tree_digest(updates)}"


def stage_record(model: nn.Module, data: data_lib.ImageData, schedule: Schedule, *, seed: int,
                 variables: Variables, masks: Masks | None, teacher: distill.Teacher | None,
                 kd: distill.KDSpec, optimizer: optax.GradientTransformation | None,
                 augment: bool, select_best: bool) -> dict[str, Any]:
    """What produces a `fit`: saved as `workdir/stage.json`, compared when it resumes."""
    distilled = None
    if teacher is not None:
        distilled = {"model": records.describe_module(teacher.model),
                     "variables": records.tree_digest(teacher.variables), "masks": records.tree_digest(teacher.masks),
                     "temperature": kd.temperature, "alpha": kd.alpha}
    return {"model": records.describe_module(model), "schedule": dataclasses.asdict(schedule),
            "optimizer": ("SGD from the schedule" if optimizer is None
                          else _optimizer_fingerprint(optimizer, variables["params"])),
            "seed": seed, "initial_variables": records.tree_digest(variables),
            "masks": records.tree_digest(masks), "teacher": distilled, "augment": augment,
            "select_best": select_best, "data": records.data_digest(data)}


CHECKPOINT_SECONDS = 60.0  # fit's default least time between epoch checkpoints
CHECKPOINT_ENV = "PDJAX_CHECKPOINT_SECONDS"


def checkpoint_interval(seconds: float | None = None) -> float:
    """`seconds`, else `$PDJAX_CHECKPOINT_SECONDS`, else `CHECKPOINT_SECONDS`, checked.

    Raises:
      SpecError: not a number >= 0.
    """
    what = f"checkpoint_seconds={seconds!r}"
    if seconds is None:
        setting = os.environ.get(CHECKPOINT_ENV, "").strip()
        if not setting:
            return CHECKPOINT_SECONDS
        what = f"{CHECKPOINT_ENV}={setting!r}"
        try:
            seconds = float(setting)
        except ValueError:
            seconds = math.nan
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not (math.isfinite(seconds) and seconds >= 0):
        raise SpecError(f"{what} must be a number >= 0: the least seconds between two checkpoints (0: every epoch)")
    return float(seconds)


def fit(model: nn.Module, data: data_lib.ImageData, schedule: Schedule, *,
        workdir: str | Path | None = None, seed: int = 0, mesh: Mesh | None = None,
        variables: Variables | None = None, masks: Masks | None = None,
        teacher: distill.Teacher | None = None, kd: distill.KDSpec = distill.KDSpec(),
        optimizer: optax.GradientTransformation | None = None,
        augment: bool = True, select_best: bool = True, eval_batch_size: int = 500,
        name: str = "train", progress: bool = True, log_every: int = 20, restart: bool = False,
        on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
        on_step: Callable[[int, Metrics], None] | None = None,
        on_variables: Callable[[int, Variables], None] | None = None,
        writer: "tensorboard.Writer | None" = None, checkpoint_seconds: float | None = None) -> FitResult:
    """Trains `model` on `data`, resuming from `workdir` if it holds checkpoints.

    Each epoch: one pass over the shuffled training split, validation on clean images and a
    line in `workdir/metrics.jsonl`; an orbax checkpoint (state + best model) after the epochs
    that end at least `checkpoint_seconds` after the last one, and after the last epoch. SIGTERM
    saves a checkpoint of the current step before stopping. At the end the
    best-validation model is evaluated on the test split and `workdir/result.json` is written.
    Running again with the same arguments continues after the last finished epoch, and a
    finished run returns its result after one test evaluation. Running again with other inputs
    (model, schedule, optimizer, seed, initial variables, masks, teacher, KD settings, data) is
    refused with `pdjax.records.StaleRunError` naming what differs: `workdir/stage.json` records
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
      kd: the KD loss's T and alpha (`pdjax.distill.KDSpec`; default the paper's T = 10,
        alpha = 0.95).
      optimizer: any optax optimizer (e.g. `optax.adamw(1e-3)`); default the paper's SGD built
        from `schedule` (`pdjax.train.sgd`: its lr, milestones, momentum, weight decay).
      augment: random crop and flip on training batches.
      select_best: report (and return as `best_variables`) the best-validation epoch's model;
        False keeps the last epoch's, as pruning rounds do.
      eval_batch_size: batch size for validation and test.
      name: label of the progress bar.
      progress: show a progress bar (first process only).
      log_every: steps between progress-bar metric updates (each one waits for the device).
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
      checkpoint_seconds: the least time between two epoch checkpoints: a crash (SIGKILL, power
        loss) loses at most this much training plus one epoch, and a resumed run repeats it to
        the same numbers. 0 checkpoints every epoch. Default `$PDJAX_CHECKPOINT_SECONDS`, else
        `CHECKPOINT_SECONDS` (saved every epoch, the demo's 93 checkpoints took about 40 s of its
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
    mesh = mesh if mesh is not None else parallel.data_mesh()
    parallel.check_batch_size(schedule.batch_size, mesh)
    checkpoint_seconds = checkpoint_interval(checkpoint_seconds)
    steps_per_epoch = len(data.train) // schedule.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch size {schedule.batch_size} exceeds the {len(data.train)} "
                         "training images")
    main = parallel.is_main_process()

    if variables is None:
        variables = models.init(model, jax.random.key(seed), data.image_shape)
    record = stage_record(model, data, schedule, seed=seed, variables=variables, masks=masks, teacher=teacher,
                          kd=kd, optimizer=optimizer,
                          augment=augment, select_best=select_best)
    if optimizer is None:
        optimizer = sgd(schedule)
    sets_learning_rate = is_sgd(optimizer)
    state = parallel.replicate(TrainState.create(variables, optimizer, masks), mesh)
    best = _copy(state.variables)
    meta: dict[str, Any] = {"epoch": 0, "best_epoch": 0, "val_accuracy": -1.0, "history": [],
                            "train_seconds": 0.0}
    store = _Store(workdir, restart, record, artifacts.describe(model, data, masked=masks is not None))
    restored = store.restore({"state": state, "best": best})
    if restored is not None:
        (tree, meta) = restored
        state, best = tree["state"], tree["best"]
        if meta["epoch"] > schedule.epochs:
            raise ValueError(f"{workdir} holds {meta['epoch']} epochs but the schedule has "
                             f"{schedule.epochs}")

    train_step = make_train_step(model, optimizer, mesh, mean=data.mean, std=data.std,
                                 augment=augment, teacher=teacher.model if teacher else None,
                                 temperature=kd.temperature, alpha=kd.alpha)
    teacher_args = () if teacher is None else (parallel.replicate(teacher.masked_variables(), mesh),)
    eval_step = make_eval_step(model, mesh, mean=data.mean, std=data.std)
    key = parallel.replicate(jax.random.key(seed), mesh)
    training = _TrainingPass(name=name, data=data, schedule=schedule, seed=seed, mesh=mesh, train_step=train_step,
                             key=key, teacher_args=teacher_args, store=store, steps_per_epoch=steps_per_epoch,
                             log_every=log_every, progress=progress, on_step=on_step, writer=writer)
    history = list(meta["history"])
    store.metrics(history)

    if on_variables is not None and meta["epoch"] == 0 and "partial" not in meta:
        on_variables(0, state.variables)
    with store, StopRequest() as stop:
        # Every process agrees on a stop request (see _TrainingPass.run), also after each epoch.
        if parallel.any_process(stop.requested) and meta["epoch"] < schedule.epochs:
            raise stop.honour(f"{name}: stopped by SIGTERM before it started (at epoch {meta['epoch']}); "
                              "run the same command again to resume")
        last_save = time.monotonic()
        for epoch in range(meta["epoch"], schedule.epochs):
            # A run stopped mid-epoch (SIGTERM) resumes at the batch after the last one it did.
            partial = meta.pop("partial", None) or {"batch": 0, "sums": {}, "seen": 0, "seconds": 0.0}
            lr = learning_rate(schedule, epoch)
            if sets_learning_rate:  # the epoch's learning rate reaches the compiled step as a value
                state = state._replace(opt_state=with_learning_rate(state.opt_state, parallel.replicate(lr, mesh)))
            state, sums, seen, start = training.run(state, epoch, partial, stop, best, meta)
            val = evaluate(eval_step, state.variables, data.val, eval_batch_size, mesh) if len(data.val) \
                else {"accuracy": sums["accuracy"] / seen, "loss": sums["loss"] / seen}
            seconds = time.perf_counter() - start
            record = {"epoch": epoch + 1, "lr": float(lr),
                      **{f"train_{k}" if k in ("loss", "accuracy") else k: v / seen for k, v in sums.items()},
                      "val_loss": val["loss"], "val_accuracy": val["accuracy"],
                      "seconds": round(seconds, 3),
                      "images_per_second": round(seen * schedule.batch_size / seconds, 1)}
            history.append(record)
            if val["accuracy"] > meta["val_accuracy"] or not select_best:
                best = _copy(state.variables)
                meta["best_epoch"], meta["val_accuracy"] = epoch + 1, val["accuracy"]
            meta.update(epoch=epoch + 1, history=history,
                        train_seconds=meta["train_seconds"] + seconds)
            if on_variables is not None:  # before the checkpoint: a resume never skips it
                on_variables(epoch + 1, state.variables)
            # Every process takes the same decision (an orbax save involves all of them).
            step = (epoch + 1) * steps_per_epoch
            saved = epoch + 1 == schedule.epochs or \
                parallel.any_process(stop.requested or time.monotonic() - last_save >= checkpoint_seconds)
            if saved:
                store.save(step, {"state": state, "best": best}, meta)
                last_save = time.monotonic()
            store.metrics(history)
            if main:
                tqdm.write(f"{name} epoch {epoch + 1}/{schedule.epochs}: loss {record['train_loss']:.4f} "
                           f"train acc {record['train_accuracy']:.4f} val acc {val['accuracy']:.4f} "
                           f"({seconds:.1f}s, {record['images_per_second']:.0f} img/s)")
            if writer is not None:
                writer.epoch(epoch + 1, record)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, record)
            if parallel.any_process(stop.requested) and epoch + 1 < schedule.epochs:
                if not saved:  # the request came after the checkpoint decision
                    store.save(step, {"state": state, "best": best}, meta)
                raise stop.honour(f"{name}: stopped by SIGTERM after epoch {epoch + 1}/{schedule.epochs}; "
                                  f"checkpoint saved in {store.where}; run the same command again "
                                  "to resume")

    if meta["best_epoch"] == 0 and meta["val_accuracy"] < 0 and len(data.val):
        # No epoch ran (epochs=0: a given model is only evaluated).
        meta["val_accuracy"] = evaluate(eval_step, best, data.val, eval_batch_size, mesh)["accuracy"]
    test = evaluate(eval_step, best, data.test, eval_batch_size, mesh)
    result = FitResult(variables=jax.device_get(state.variables), masks=jax.device_get(state.masks),
                       best_variables=jax.device_get(best),
                       best_epoch=meta["best_epoch"], val_accuracy=meta["val_accuracy"],
                       test_accuracy=test["accuracy"], test_loss=test["loss"], history=history,
                       train_seconds=meta["train_seconds"])
    store.finish(best, result.summary(), result.masks)
    if writer is not None:
        writer.close()
    return result
