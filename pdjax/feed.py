"""How an epoch's batches reach the train step: from the host, one batch a step (a `device_put`
of images and labels each step), or from the devices, where the training split was placed once
(`ResidentData`): the host sends each epoch's batch indices once and each call a step number, and
one call can run several steps (`make_train_step(resident=True, steps=K)`, a `lax.scan`), so
that the host does not bound a fast accelerator's step.

Which: `place_training_data` (data on the devices when it fits `device_data_budget`, else host
batches with the reason printed), used by `pdjax.train.fit` (`data_on_device`,
`steps_per_dispatch`). Both paths take the same batches in the same order
(`pdjax.data.train_batches`, `epoch_batches`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator

import jax
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from pdjax import data as data_lib
from pdjax import parallel
from pdjax.types import Array, SpecError

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


def epoch_batches(num_examples: int, batch_size: int, seed: int, epoch: int) -> np.ndarray:
    """The epoch's batches as an index matrix (batches, batch_size): the rows
    `pdjax.data.train_batches` yields, each sorted, the last incomplete batch dropped."""
    order = data_lib.epoch_order(num_examples, seed, epoch)
    n = num_examples // batch_size
    return np.sort(order[: n * batch_size].reshape(n, batch_size), axis=1).astype(np.int32)


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
    order = parallel.replicate(epoch_batches(len(run.data.train), run.schedule.batch_size, run.seed, epoch),
                               run.mesh)
    i = first
    while i < run.steps_per_epoch:
        k = min(run.steps_per_dispatch, run.steps_per_epoch - i)
        state, metrics = run.train_step(k)(state, run.resident.images, run.resident.labels, order, run.key,
                                           *run.teacher_args)
        i += k
        yield state, i, metrics
