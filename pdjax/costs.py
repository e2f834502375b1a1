"""What a model costs at inference: parameters, FLOPs (XLA's count) and measured images/s.

A masked (pruned) network computes exactly as much as the dense one, because masks multiply
dense kernels; only a derived (narrower) student computes less. These numbers make that visible.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from pdjax import compilation
from pdjax.models import count_params
from pdjax.types import Variables


def _forward(model: nn.Module):
    return jax.jit(lambda variables, x: model.apply(variables, x, train=False))


def xla_flops(jitted: Any, *args: Any) -> float:
    """Floating-point operations of one call of a jitted function, as XLA counts them."""
    # Run never: compiled cheaply (the backend's optimisation level does not change XLA's count).
    options = compilation.ONE_OFF_OPTIONS if jax.default_backend() == "cpu" else None
    analysis = jitted.lower(*args).compile(compiler_options=options).cost_analysis()
    if isinstance(analysis, list):  # older JAX returned one dict per device
        analysis = analysis[0]
    return float(analysis.get("flops", float("nan")))


def flops_per_image(model: nn.Module, variables: Variables, image_shape: tuple[int, ...]) -> float:
    """Floating-point operations of one evaluation-mode forward pass, as XLA counts them."""
    return xla_flops(_forward(model), variables, jnp.zeros((1, *image_shape), jnp.float32))


def images_per_second(model: nn.Module, variables: Variables, image_shape: tuple[int, ...],
                      batch_size: int = 256, repeats: int = 5) -> float:
    """Evaluation-mode forward throughput on the default device (best of `repeats`)."""
    forward = _forward(model)
    x = jax.random.normal(jax.random.key(0), (batch_size, *image_shape))
    forward(variables, x).block_until_ready()  # compile
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        forward(variables, x).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return batch_size / best


def inference_costs(model: nn.Module, variables: Variables, image_shape: tuple[int, ...], *,
                    nonzero_params: int | None = None, batch_size: int = 256) -> dict[str, Any]:
    """Parameters (all, and nonzero where masks zero some), FLOPs per image and images/s."""
    params = count_params(variables["params"])
    return {"params": params, "nonzero_params": params if nonzero_params is None else nonzero_params,
            "flops": flops_per_image(model, variables, image_shape),
            "images_per_second": images_per_second(model, variables, image_shape, batch_size)}
