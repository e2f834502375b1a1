"""The training step and what it needs: the schedule, SGD, the train state, one jitted train
step and eval step over a mesh (the same code for 1 device, 8 devices and a multi-host pod), and
evaluation of a split. `pdjax.train.fit` runs the loop around them.

Usage:
    schedule = pdjax.steps.Schedule(epochs=200, batch_size=128, lr=0.1,
                                    milestones=(60, 120, 160), lr_factor=0.2, weight_decay=5e-4)
    state = pdjax.steps.TrainState.create(variables, pdjax.steps.sgd(schedule))
    step = pdjax.steps.make_train_step(model, pdjax.steps.sgd(schedule), mesh, mean=data.mean, std=data.std)
    state, metrics = step(state, images, labels, key)
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from jax.sharding import Mesh

from pdjax import data as data_lib
from pdjax import distill
from pdjax import masks as masks_lib
from pdjax import parallel
from pdjax.types import Array, Masks, Metrics, Params, PRNGKey, PyTree, Variables, check


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
             f"milestones={self.milestones} must lie in 1..{self.epochs - 1} (epochs={self.epochs}; a shorter "
             "schedule needs its milestones set too)"),
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
    """A step function jitted once; `traces` counts how often JAX traced it, `signature` holds
    the shapes, dtypes and shardings of its first call's arguments (what `export` lowers)."""

    def __init__(self, fn: Callable[..., Any], **jit_kwargs: Any):
        self.traces = 0
        self.signature: tuple | None = None

        def traced(*args: Any) -> Any:
            self.traces += 1
            if self.signature is None:
                self.signature = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(
                    a, "sharding", None)), args)
            return fn(*args)

        self._jitted = jax.jit(traced, **jit_kwargs)

    def __call__(self, *args: Any) -> Any:
        return self._jitted(*args)

    def export(self, platforms: tuple[str, ...]) -> Any:
        """The step lowered for `platforms` (`jax.export`, e.g. ("cuda", "tpu")) from its first
        call's signature, without compiling or running it: a step that would not lower for an
        accelerator is found on any machine."""
        if self.signature is None:
            raise ValueError("the step has not been called yet: no signature to export")
        return jax.export.export(self._jitted, platforms=platforms)(*self.signature)


def built_steps() -> dict[tuple, CompiledStep]:
    """The train and eval steps this process has built (`make_train_step`, `make_eval_step`),
    by their key (kind, model, ...)."""
    return dict(_STEPS)


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
                    kd: distill.KDSpec = distill.KDSpec(), resident: bool = False,
                    steps: int = 1, unroll: bool = False) -> CompiledStep:
    """Builds the train step, jitted over `mesh`; the same arguments in the same process (the
    same model, mesh, normalisation, teacher architecture and optimizer update rule: every
    `sgd` schedule shares one) return the step already built, so it is traced and compiled
    once.

    Without a teacher: `step(state, images, labels, key) -> (state, metrics)`, cross-entropy.
    With `teacher` (a module): `step(state, images, labels, key, teacher_variables)`, the
    distillation loss `kd` (`pdjax.distill.KDSpec`, whole: its loss and settings; one compiled
    step per loss); the teacher sees the same augmented batch as the student,
    in evaluation mode, under `stop_gradient`. Its variables are an argument (pass them with
    masks applied), so one compiled step serves every teacher of the same shapes.

    `images` (uint8) and `labels` are sharded on the batch axis; the state is replicated and
    donated. Without a teacher and with `kd.loss == "teacher_free"`, the step trains on the
    teacher-free loss (`pdjax.distill.teacher_free_loss`, no teacher runs). The step's
    randomness (augmentation, dropout) is `fold_in(key, state.step)`, so a resumed run draws
    exactly what an uninterrupted one would. Metrics: `loss`, `accuracy`, and with a teacher
    `kd_loss`, `ce_loss`, `teacher_accuracy`.

    With `resident=True` the training split lives on the devices (`pdjax.feed.ResidentData`) and one call
    runs `steps` consecutive steps of the same step function (a `lax.scan` for steps > 1):
    `step(state, images, labels, batches, key[, teacher_variables]) -> (state, metrics)`, where
    `images`, `labels` are the whole split and `batches` the epoch's (batches, batch_size) index
    matrix, replicated; each step takes row `state.step % batches` (the state counts its steps,
    from 0 at a fit's start, resumed with it), so a call sends the host nothing but the call.
    Metrics then have a leading axis of `steps`.
    """

    key = ("train", model, optimizer.update, mesh, _floats(mean), _floats(std), augment, teacher,
           kd if teacher is not None or not kd.uses_teacher else None, resident, steps, unroll)
    return _reused(key, lambda: _build_train_step(model, optimizer, mesh, mean=mean, std=std, augment=augment,
                                                  teacher=teacher, kd=kd, resident=resident, steps=steps,
                                                  unroll=unroll))


def _build_train_step(model: nn.Module, optimizer: optax.GradientTransformation, mesh: Mesh, *, mean: Any,
                      std: Any, augment: bool, teacher: nn.Module | None, kd: distill.KDSpec,
                      resident: bool = False, steps: int = 1, unroll: bool = False) -> CompiledStep:
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
            if teacher_logits is None and kd.uses_teacher:  # no teacher: the labels alone
                return cross_entropy(logits, labels).mean(), (logits, updates, {})
            parts = distill.loss(kd, logits, teacher_logits, labels)
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
    if not resident:
        if teacher is None:
            return CompiledStep(lambda state, images, labels, key: step(state, images, labels, key),
                                in_shardings=(rep, batch, batch, rep), out_shardings=(rep, rep),
                                donate_argnums=(0,))
        return CompiledStep(step, in_shardings=(rep, batch, batch, rep, rep), out_shardings=(rep, rep),
                            donate_argnums=(0,))

    def from_resident(state: TrainState, images: Array, labels: Array, batches: Array, key: PRNGKey,
                      teacher_variables: Variables | None = None):
        def one(state: TrainState, _: Any):
            # The epoch's batch number is the state's step count modulo the epoch's batches (every
            # epoch has as many, and a resumed state has its count): the host sends nothing a step.
            # The batch is taken on the device and laid out as a host batch would be: sharded on
            # the batch axis.
            idx = batches[state.step % batches.shape[0]]
            x = jax.lax.with_sharding_constraint(images[idx], batch)
            y = jax.lax.with_sharding_constraint(labels[idx], batch)
            return step(state, x, y, key, teacher_variables)

        if steps == 1:  # no loop: the program of one step, as a host batch's
            state, metrics = one(state, None)
            return state, jax.tree.map(lambda m: m[None], metrics)
        return jax.lax.scan(one, state, length=steps, unroll=unroll)

    if teacher is None:
        return CompiledStep(lambda state, images, labels, batches, key: from_resident(state, images, labels, batches, key),
                            in_shardings=(rep,) * 5, out_shardings=(rep, rep), donate_argnums=(0,))
    return CompiledStep(from_resident, in_shardings=(rep,) * 6, out_shardings=(rep, rep), donate_argnums=(0,))


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
