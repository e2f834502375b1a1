"""One device mesh for every scale: 1 device, 8 devices, many hosts.

The batch is sharded on the mesh's `data` axis and everything else (parameters, BatchNorm
statistics, optimizer state, masks) is replicated; XLA inserts the collectives, so BatchNorm
statistics and gradients are those of the global batch and N devices compute what 1 does.
Each host feeds its own share of the global batch (`jax.make_array_from_process_local_data`).
"""

from __future__ import annotations

import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from pdjax.types import PyTree

DATA_AXIS = "data"


def initialize_distributed() -> None:
    """Starts JAX's distributed runtime when the environment describes several processes.

    On Cloud TPU pods and SLURM/GPU clusters `jax.distributed.initialize()` reads its settings
    from the environment; locally, set `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and
    `JAX_PROCESS_ID`. A single process with none of these does nothing.
    """
    if jax.distributed.is_initialized():
        return
    if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("TPU_WORKER_HOSTNAMES") \
            or os.environ.get("SLURM_JOB_ID"):
        # Collectives between processes' CPU devices (a CPU-only cluster; ignored elsewhere).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize()


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
    # device_put may reuse a buffer already on one of the mesh's devices (even with
    # may_alias=False, as of JAX 0.10): copy first.
    fresh = jax.tree.map(lambda a: jnp.array(a, copy=True) if isinstance(a, jax.Array) else a, tree)
    return jax.device_put(fresh, replicated(mesh))


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


def is_main_process() -> bool:
    """Only the first process writes results, logs and progress bars."""
    return jax.process_index() == 0
