"""An epoch's pass of `pdjax.train.fit`, and how its batches reach the train step.

`TrainingPass` runs one epoch: batches to the step, metrics back (checked for NaN as they
arrive), the stop request honoured with a checkpoint; `Progress` is the loop's record, saved with
each checkpoint. The batches come from the host, one a step (a `device_put` of images and labels
each step), or from the devices, where the training split was placed once (`ResidentData`): the
host sends each epoch's batch indices once and then only calls, and one call can run several
steps (`make_train_step(resident=True, steps=K)`), so the host does not bound a fast
accelerator's step. `place_training_data` chooses (the data on the devices when it fits
`device_data_budget`, else host batches with the reason printed); both paths take the same
batches in the same order (`pdjax.data.epoch_batches`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from pdjax import data as data_lib
from pdjax import parallel
from pdjax.steps import CompiledStep, Schedule, TrainState
from pdjax.types import Array, Metrics, SpecError, Variables

# Backends on which several steps a call are unrolled rather than looped (`make_train_step(unroll=
# True)`): XLA:CPU ran a VGG11 train step inside a rolled `lax.scan` 7-8x slower than alone
# (1,145 ms against 147 ms a step at 1/16 width, batch 128, 2 cores; the same step unrolled:
# 146 ms), while an unrolled loop compiles about K times longer. Unrolled, the K steps give
# exactly the floats of K calls of one step.
UNROLL_ON = {"cpu": True}


@dataclasses.dataclass(frozen=True)
class ResidentData:
    """A training split placed on the devices once (replicated: every device, of every process,
    holds it), so that a step takes its batch there (`make_train_step(resident=True)`)."""

    images: Array
    labels: Array

    @staticmethod
    def nbytes(split: data_lib.Split) -> int:
        return int(split.images.nbytes + split.labels.nbytes)

    @classmethod
    def place(cls, split: data_lib.Split, mesh: Mesh) -> "ResidentData":
        images, labels = parallel.replicate((np.asarray(split.images), np.asarray(split.labels, np.int32)), mesh)
        return cls(images, labels)


DEVICE_DATA_ENV = "PDJAX_DEVICE_DATA_BYTES"
DEVICE_DATA_SHARE = 0.25  # of a device's memory, where the device reports it
DEVICE_DATA_DEFAULT = 2 << 30  # bytes, where it does not (the CPU backend)
_told: set[str] = set()


def device_data_budget(mesh: Mesh) -> int:
    """How many bytes of training data each device may hold: `$PDJAX_DEVICE_DATA_BYTES`, else
    a quarter of the device's memory where it reports it (GPU, TPU), else 2 GiB (CPU, whose
    "device" memory is the host's)."""
    setting = os.environ.get(DEVICE_DATA_ENV, "").strip()
    if setting:
        try:
            return int(float(setting))
        except ValueError:
            raise SpecError(f"{DEVICE_DATA_ENV}={setting!r} must be a number of bytes") from None
    # A device of this process (memory_stats reads only addressable devices), all alike.
    local = next(d for d in mesh.devices.flat if d.process_index == jax.process_index())
    stats = local.memory_stats() or {}
    limit = stats.get("bytes_limit")
    return int(DEVICE_DATA_SHARE * limit) if limit else DEVICE_DATA_DEFAULT


def place_training_data(data: data_lib.ImageData, mesh: Mesh, data_on_device: bool | None,
                        steps_per_dispatch: int, *, name: str = "train") -> ResidentData | None:
    """The training split on the devices (`ResidentData`), or None for host batches: always with
    `data_on_device=True`, never with False; with None, when it fits `device_data_budget`,
    else None with the reason printed once per process."""
    if data_on_device is False:
        return None
    size, budget = ResidentData.nbytes(data.train), device_data_budget(mesh)
    if data_on_device is None and size > budget:
        reason = (f"{name}: the training split ({size / 2**20:,.0f} MiB) exceeds the device budget "
                  f"({budget / 2**20:,.0f} MiB, ${DEVICE_DATA_ENV}): batches go from the host, one step a dispatch")
        if reason not in _told and parallel.is_main_process():
            _told.add(reason)
            tqdm.write(reason)
        return None
    return ResidentData.place(data.train, mesh)


@dataclasses.dataclass
class PartialEpoch:
    """Where a run stopped inside an epoch (SIGTERM): the batches done, their metric sums, the
    steps seen and the seconds spent; a resumed run continues at the next batch."""

    batch: int = 0
    sums: dict[str, float] = dataclasses.field(default_factory=dict)
    seen: int = 0
    seconds: float = 0.0


@dataclasses.dataclass
class Progress:
    """What a fit has done, saved as each checkpoint's metadata and read back on resume.

    Attributes:
      epoch: epochs finished.
      best_epoch, val_accuracy: the best-validation epoch so far (0 and -1: none yet).
      history: one record per finished epoch.
      train_seconds: training wall time, summed over resumed runs.
      partial: set only in a checkpoint taken mid-epoch (`PartialEpoch`).
    """

    epoch: int = 0
    best_epoch: int = 0
    val_accuracy: float = -1.0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    train_seconds: float = 0.0
    partial: PartialEpoch | None = None

    def to_meta(self) -> dict[str, Any]:
        """The checkpoint's metadata (the keys checkpoints have always had)."""
        meta = {"epoch": self.epoch, "best_epoch": self.best_epoch, "val_accuracy": self.val_accuracy,
                "history": self.history, "train_seconds": self.train_seconds}
        if self.partial is not None:
            meta["partial"] = dataclasses.asdict(self.partial)
        return meta

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> "Progress":
        partial = meta.get("partial")
        return cls(meta["epoch"], meta["best_epoch"], meta["val_accuracy"], list(meta["history"]),
                   meta["train_seconds"], None if partial is None else PartialEpoch(**partial))


@dataclasses.dataclass
class TrainingPass:
    """One epoch's pass over the training split, with what every epoch of a `fit` shares: the
    compiled step (one per number of steps a dispatch runs: `steps_per_dispatch` and an epoch's
    remainder), the data on the devices or None (host batches), progress bar, metric sums
    (checked for NaN as they arrive) and the stop request, which saves a checkpoint of the
    current step and raises `Preempted`."""

    name: str
    data: data_lib.ImageData
    schedule: Schedule
    seed: int
    mesh: Mesh
    train_step: Callable[[int], CompiledStep]  # steps per dispatch -> the compiled step
    key: Any
    teacher_args: tuple
    store: Any  # pdjax.train's run directory (save, where)
    steps_per_epoch: int
    log_every: int
    progress: bool
    on_step: Callable[[int, Metrics], None] | None
    writer: Any = None  # a pdjax.tensorboard.Writer
    resident: ResidentData | None = None
    steps_per_dispatch: int = 1

    def run(self, state: TrainState, epoch: int, done: Progress, stop: Any,
            best: Variables) -> tuple[TrainState, PartialEpoch]:
        """Trains epoch `epoch` (0-based) of a fit that has done `done`, from the batch after
        `done.partial`'s last one when it stopped inside this epoch. Returns the state and the
        epoch's `PartialEpoch` (all batches: its metric sums, steps and seconds). A stop request
        (checked after each dispatch) saves a checkpoint of `done` with this epoch's partial
        progress and raises `Preempted`."""
        steps_per_epoch, single_process = self.steps_per_epoch, jax.process_count() == 1
        partial = done.partial or PartialEpoch()
        start = time.perf_counter() - partial.seconds
        bar = tqdm(total=steps_per_epoch, initial=partial.batch,
                   desc=f"{self.name} {epoch + 1}/{self.schedule.epochs}",
                   disable=not (self.progress and parallel.is_main_process()), leave=False, dynamic_ncols=True)
        pending: list[Any] = []
        sums: dict[str, float] = dict(partial.sums)
        seen = partial.seen

        def collect(upto: int) -> None:
            nonlocal pending, seen
            fetched = fetch_metrics(pending)
            for j, m in enumerate(fetched):
                if not np.isfinite(m["loss"]):
                    raise FloatingPointError(
                        f"{self.name}: loss is {m['loss']} at epoch {epoch + 1}, step "
                        f"{epoch * steps_per_epoch + upto - len(fetched) + j + 1}; the last good "
                        f"checkpoint is epoch {done.epoch} in {self.store.where}")
                for k, v in m.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
            if self.writer is not None and fetched:
                self.writer.step(epoch * steps_per_epoch + upto,
                                 {"train_loss": sum(float(m["loss"]) for m in fetched) / len(fetched)})
            seen += len(fetched)
            pending = []
            bar.update(len(fetched))

        before = partial.batch
        for state, i, metrics in dispatches(self, state, epoch, partial.batch):
            pending.append(metrics)
            global_step = epoch * steps_per_epoch + i
            if self.on_step is not None:
                per_step = metrics if isinstance(metrics, list) else \
                    [jax.tree.map(lambda m, j=j: m[j], metrics) for j in range(i - before)]
                for j, m in enumerate(per_step):
                    self.on_step(global_step - len(per_step) + j + 1, m)
            logged = i // self.log_every > before // self.log_every  # a multiple of log_every passed
            before = i
            # With several processes the stop request is agreed (a SIGTERM may reach only one of
            # them): all stop at the same step. One process checks after every dispatch; several
            # every `log_every` steps, a small all-gather each time.
            if (single_process or logged) and parallel.any_process(stop.requested):
                collect(i)
                bar.close()
                stopped = PartialEpoch(i, sums, seen, time.perf_counter() - start)
                self.store.save(global_step, {"state": state, "best": best},
                                dataclasses.replace(done, partial=stopped).to_meta())
                raise stop.honour(f"{self.name}: stopped by SIGTERM at epoch {epoch + 1}, batch "
                                  f"{i}/{steps_per_epoch}; checkpoint saved in {self.store.where}; "
                                  "run the same command again to resume")
            if logged or i == steps_per_epoch:
                collect(i)
                elapsed = time.perf_counter() - start
                bar.set_postfix(loss=f"{sums['loss'] / seen:.3f}", acc=f"{sums['accuracy'] / seen:.3f}",
                                img_s=f"{seen * self.schedule.batch_size / elapsed:.0f}")
        bar.close()
        return state, PartialEpoch(steps_per_epoch, sums, seen, time.perf_counter() - start)


@jax.jit
def _stacked(chunks: list[dict[str, Array]]) -> dict[str, Array]:
    return {k: jnp.concatenate([jnp.reshape(c[k], (-1,)) for c in chunks]) for k in chunks[0]}


def fetch_metrics(pending: list[Any]) -> list[dict[str, Any]]:
    """Dispatches' metrics (`dispatches`: lists of per-step dicts of scalars, or dicts of (steps,)
    arrays), fetched to the host as one dict per step, in order. They are stacked on the devices
    first and fetched as one array per metric: fetching each step's scalars one by one cost the
    host more than the step's own call (0.23 against 0.19 ms a step at K = 1, VGG11 at 1/16)."""
    chunks = [d for chunk in pending for d in (chunk if isinstance(chunk, list) else [chunk])]
    if not chunks:
        return []
    stacked = jax.device_get(_stacked(chunks))
    return [{k: v[j] for k, v in stacked.items()} for j in range(len(next(iter(stacked.values()))))]


def dispatches(run: Any, state: Any, epoch: int, first: int) -> Iterator[tuple[Any, int, Any]]:
    """Runs epoch `epoch` of a fit's training pass `run` (`pdjax.train`) from batch `first`, one
    dispatch at a time: a host batch a step, or with `run.resident` the epoch's index matrix sent
    once and `run.steps_per_dispatch` steps a call. Yields (state, batches done so far, that
    dispatch's metrics: a list of per-step dicts of device arrays, or a dict of (steps,) arrays)."""
    if run.resident is None:
        batches = data_lib.train_batches(run.data.train, run.schedule.batch_size, run.seed, epoch,
                                         start_batch=first)
        step = run.train_step(1)
        for i, batch in enumerate(batches, start=first):
            state, metrics = step(state, *parallel.put_global_batch(batch, run.mesh), run.key,
                                  *run.teacher_args)
            yield state, i + 1, [metrics]
        return
    rows = data_lib.epoch_batches(len(run.data.train), run.schedule.batch_size, run.seed, epoch)
    order = parallel.replicate(rows, run.mesh)
    i = first
    while i < run.steps_per_epoch:
        k = min(run.steps_per_dispatch, run.steps_per_epoch - i)
        state, metrics = run.train_step(k)(state, run.resident.images, run.resident.labels, order, run.key,
                                           *run.teacher_args)
        i += k
        yield state, i, metrics
