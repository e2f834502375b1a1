"""One device mesh for every scale: 1 device, 8 devices, many hosts.

The batch is sharded on the mesh's `data` axis and everything else (parameters, BatchNorm
statistics, optimizer state, masks) is replicated; XLA inserts the collectives, so BatchNorm
statistics and gradients are those of the global batch and N devices compute what 1 does.
Each host feeds its own share of the global batch (`jax.make_array_from_process_local_data`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from pdjax.types import PyTree

DATA_AXIS = "data"
HEARTBEAT_TIMEOUT_SECONDS = 30


def initialize_distributed() -> None:
    """Starts JAX's distributed runtime when the environment describes several processes.

    On Cloud TPU pods and SLURM clusters JAX detects the settings itself. Elsewhere set
    `JAX_COORDINATOR_ADDRESS` (host:port of process 0), `JAX_NUM_PROCESSES` and
    `JAX_PROCESS_ID` in every process: JAX reads only the first, so the other two are passed
    here. A single process with none of these does nothing.
    """
    if jax.distributed.is_initialized():
        return
    if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("TPU_WORKER_HOSTNAMES") \
            or os.environ.get("SLURM_JOB_ID"):
        # Collectives between processes' CPU devices (a CPU-only cluster; ignored elsewhere).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        # JAX's preemption service would take SIGTERM for itself; pdjax's own handler
        # (`pdjax.train.StopRequest`) saves a checkpoint, and the processes agree on the step.
        jax.config.update("jax_enable_preemption_service", False)
        settings = {}
        for variable, name in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
            if os.environ.get(variable):
                try:
                    settings[name] = int(os.environ[variable])
                except ValueError:
                    raise ValueError(f"{variable}={os.environ[variable]!r} is not a whole number") from None
        # A process that stops sending heartbeats (a dead host) is declared failed after this
        # many seconds, and the others stop instead of waiting in a collective forever.
        heartbeat = os.environ.get("PDJAX_HEARTBEAT_TIMEOUT", str(HEARTBEAT_TIMEOUT_SECONDS))
        jax.distributed.initialize(**settings, heartbeat_timeout_seconds=int(heartbeat))


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over `devices` (default: every device of every process) on the `data` axis."""
    devices = list(devices) if devices is not None else jax.devices()
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the `data` axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, P())


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Places a copy of every array of `tree` on every device of the mesh.

    The copy never aliases the caller's arrays, so a step that donates its state cannot
    delete arrays the caller still holds.
    """
    sharding = replicated(mesh)
    if jax.process_count() > 1:
        # device_put cannot place a local array on devices of other processes: every process
        # builds its own devices' copies from the same host values (the tree is the same on
        # every process: made from the same seed, or read from the same checkpoint).
        def place(host: np.ndarray) -> jax.Array:
            return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

        return jax.tree.map(lambda a: _via_host(a, place) if isinstance(a, (jax.Array, np.ndarray, np.generic)) else a,
                            tree)
    # device_put may reuse a buffer already on one of the mesh's devices (even with
    # may_alias=False, as of JAX 0.10): copy first, on the host (an eager on-device copy
    # compiled one XLA program per leaf shape: ~20 per model, in every new process).
    return jax.device_put(jax.tree.map(lambda a: _via_host(a, np.asarray) if isinstance(a, jax.Array) else a, tree),
                          sharding)


def _via_host(leaf: Any, place: Callable[[np.ndarray], Any]) -> Any:
    """A copy of an array made on the host and placed by `place`; a typed PRNG key through its
    key data."""
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(_via_host(jax.random.key_data(leaf), place), impl=jax.random.key_impl(leaf))
    return place(np.array(jax.device_get(leaf)))  # np.array copies


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """A global batch must split evenly over the devices and the processes."""
    n = mesh.devices.size
    if batch_size % n or batch_size % jax.process_count():
        raise ValueError(f"batch size {batch_size} is not divisible by the {n} devices of the mesh; "
                         f"use a multiple of {n}")


def process_slice(batch_size: int) -> slice:
    """The rows of a global batch that this process feeds."""
    per_process = batch_size // jax.process_count()
    start = jax.process_index() * per_process
    return slice(start, start + per_process)


def put_global_batch(arrays: Sequence[np.ndarray], mesh: Mesh) -> tuple[jax.Array, ...]:
    """Turns a global batch (the same numpy arrays on every host) into sharded jax arrays.

    Each process contributes only its own rows, so hosts need not transfer the others'.
    """
    sharding = batch_sharding(mesh)
    rows = process_slice(len(arrays[0]))
    return tuple(jax.make_array_from_process_local_data(sharding, np.asarray(a[rows]),
                                                         (len(a), *a.shape[1:]))
                 for a in arrays)


def any_process(flag: bool) -> bool:
    """Whether `flag` is true in any process; the same answer in every process.

    A collective with several processes: every process must call it at the same point."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.max(multihost_utils.process_allgather(np.asarray([int(bool(flag))], np.int32))))


def remove_directory(path: str | Path) -> None:
    """Deletes `path` (the first process does; the directory is shared) and waits until every
    process is past that point, so that none reads the directory while it goes. A collective:
    every process must call it."""
    path = Path(path)
    if path.exists() and is_main_process():
        shutil.rmtree(path)
    any_process(False)  # a barrier


TEXT_BYTES = 4096


def gather_texts(text: str) -> list[str]:
    """Every process's `text` (at most 4096 bytes of UTF-8), in process order.

    A collective with several processes: every process must call it at the same point."""
    if jax.process_count() == 1:
        return [text]
    from jax.experimental import multihost_utils

    raw = text.encode()[:TEXT_BYTES]
    buffer = np.zeros(TEXT_BYTES + 1, np.int32)
    buffer[0] = len(raw)
    buffer[1:1 + len(raw)] = np.frombuffer(raw, np.uint8)
    gathered = np.asarray(multihost_utils.process_allgather(buffer))
    return [bytes(row[1:1 + row[0]].astype(np.uint8)).decode(errors="replace") for row in gathered]


def is_main_process() -> bool:
    """Only the first process writes results, logs and progress bars."""
    return jax.process_index() == 0
