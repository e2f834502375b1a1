"""Shared helpers of the benchmarks: timing, matmul peaks, pdjax step builders, tables.

Every benchmark times a function by running it `warmup` times (compilation included there) and
then `repeats` times, and reports the median. Results are printed as markdown tables.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np

from pdjax import costs, models, parallel
from pdjax import masks as masks_lib
from pdjax import train as train_lib

NUM_CLASSES = 100  # CIFAR-100, the paper's main data set
IMAGE_SHAPE = (32, 32, 3)
MEAN = (0.507, 0.487, 0.441)
STD = (0.267, 0.256, 0.276)


def median_seconds(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 3) -> float:
    """Median wall time of `fn()`; `fn` must block until its work is done."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def jax_matmul_peak(n: int = 2048, dtype: Any = jnp.float32, repeats: int = 5) -> float:
    """FLOP/s of an n x n x n matmul on JAX's default device."""
    a = jax.random.normal(jax.random.key(0), (n, n)).astype(dtype)
    b = jax.random.normal(jax.random.key(1), (n, n)).astype(dtype)
    f = jax.jit(lambda a, b: a @ b)
    seconds = median_seconds(lambda: f(a, b).block_until_ready(), warmup=2, repeats=repeats)
    return 2 * n**3 / seconds


def step_flops(compiled_step: train_lib.CompiledStep, *args: Any) -> float:
    """FLOPs of one call of a jitted step, as XLA's cost analysis counts them."""
    return costs.xla_flops(compiled_step._jitted, *args)


@dataclasses.dataclass
class PdjaxSetup:
    """A model with its variables, a mesh and uint8 batches ready for its steps."""

    name: str
    model: Any
    variables: dict
    mesh: Any
    images: jax.Array
    labels: jax.Array
    key: jax.Array

    @classmethod
    def create(cls, name: str, batch_size: int, *, widths: Sequence[int] | None = None,
               dtype: Any = None, seed: int = 0, devices: Sequence[Any] | None = None) -> "PdjaxSetup":
        model = models.get(name, NUM_CLASSES, widths, dtype=dtype)
        variables = models.init(model, jax.random.key(seed), IMAGE_SHAPE)
        mesh = parallel.data_mesh(devices)
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, (batch_size, *IMAGE_SHAPE), dtype=np.uint8)
        labels = rng.integers(0, NUM_CLASSES, (batch_size,), dtype=np.int32)
        images, labels = parallel.put_global_batch((images, labels), mesh)
        return cls(name, model, variables, mesh, images, labels, jax.random.key(seed))

    def optimizer(self):
        schedule = train_lib.Schedule(epochs=1, batch_size=len(self.labels), lr=0.1,
                                      weight_decay=5e-4)
        return train_lib.sgd(schedule)

    def state(self, masks: Any = None) -> train_lib.TrainState:
        state = train_lib.TrainState.create(self.variables, self.optimizer(), masks)
        return parallel.replicate(state, self.mesh)

    def train_step(self, teacher: Any = None, augment: bool = True) -> train_lib.CompiledStep:
        return train_lib.make_train_step(self.model, self.optimizer(), self.mesh, mean=MEAN,
                                         std=STD, augment=augment, teacher=teacher)

    def eval_step(self) -> train_lib.CompiledStep:
        return train_lib.make_eval_step(self.model, self.mesh, mean=MEAN, std=STD)

    def time_train(self, step: train_lib.CompiledStep, state: train_lib.TrainState,
                   *extra: Any, repeats: int = 3) -> tuple[float, float]:
        """(median seconds per step, XLA FLOPs per step)."""
        flops = step_flops(step, state, self.images, self.labels, self.key, *extra)
        holder = [state]

        def run():
            holder[0], metrics = step(holder[0], self.images, self.labels, self.key, *extra)
            jax.block_until_ready(metrics)

        return median_seconds(run, repeats=repeats), flops

    def time_eval(self, repeats: int = 3) -> tuple[float, float]:
        step = self.eval_step()
        variables = parallel.replicate(self.variables, self.mesh)
        weights = jnp.ones(self.labels.shape, jnp.float32)
        weights = jax.device_put(weights, parallel.batch_sharding(self.mesh))
        flops = step_flops(step, variables, self.images, self.labels, weights)
        run = lambda: jax.block_until_ready(step(variables, self.images, self.labels, weights))
        return median_seconds(run, repeats=repeats), flops


def random_masks(params: Any, density: float, seed: int = 0) -> Any:
    """Masks that keep a random `density` of every prunable kernel."""
    template = masks_lib.init(params)
    leaves, treedef = jax.tree.flatten(template, is_leaf=masks_lib.is_none)
    rng = np.random.default_rng(seed)
    out = [None if m is None else jnp.asarray(rng.random(m.shape) < density) for m in leaves]
    return jax.tree.unflatten(treedef, out)


def table(rows: Sequence[dict[str, Any]], title: str) -> str:
    """A titled markdown table of `rows` (dicts with the same keys, values already formatted)."""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "|".join("---" for _ in keys) + "|"]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    return f"\n### {title}\n\n" + "\n".join(lines) + "\n"


def environment() -> str:
    """One line naming the JAX backend, devices and versions."""
    d = jax.devices()[0]
    return (f"jax {jax.__version__}, backend {jax.default_backend()}, {len(jax.devices())} x "
            f"{d.device_kind}, {jax.local_devices()[0].platform}")
