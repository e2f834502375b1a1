"""What a model costs at inference: parameters, FLOPs (XLA's count) and images/s measured side by
side (`throughput`: interleaved, best of N; benchmarks/inference.py uses it too).

A masked (pruned) network computes exactly as much as the dense one, because masks multiply
dense kernels; only a derived (narrower) student computes less. These numbers make that visible.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

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
    options = compilation.one_off_options() if jax.default_backend() == "cpu" else None
    analysis = jitted.lower(*args).compile(compiler_options=options).cost_analysis()
    if isinstance(analysis, list):  # older JAX returned one dict per device
        analysis = analysis[0]
    return float(analysis.get("flops", float("nan")))


def flops_per_image(model: nn.Module, variables: Variables, image_shape: tuple[int, ...]) -> float:
    """Floating-point operations of one evaluation-mode forward pass, as XLA counts them."""
    return xla_flops(_forward(model), variables, jnp.zeros((1, *image_shape), jnp.float32))


def throughput(forwards: Mapping[str, Callable[[Any], Any]], images: Any, *, repeats: int = 7) -> dict[str, float]:
    """Images/s of several forward functions on the same batch, measured interleaved: each is
    called once to compile, then round by round each in turn, and its best round counts
    (best-of-`repeats`). Interleaving spreads a noisy neighbour over all of them alike, and the
    best round is the one least disturbed; on a shared CPU the absolute numbers still move
    from run to run, their ratios much less.

    Args:
      forwards: name -> a function of the batch that returns arrays (e.g. a jitted forward
        pass or an exported model's `call`).
      images: the batch every function gets.
      repeats: rounds.
    """
    n = len(images)
    for forward in forwards.values():
        jax.block_until_ready(forward(images))  # compile
    best = {name: float("inf") for name in forwards}
    for _ in range(repeats):
        for name, forward in forwards.items():
            start = time.perf_counter()
            jax.block_until_ready(forward(images))
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: n / seconds for name, seconds in best.items()}


def forward_pass(model: nn.Module, variables: Variables) -> Callable[[Any], Any]:
    """The jitted evaluation-mode forward pass of `model` with `variables`."""
    forward = _forward(model)
    return lambda x: forward(variables, x)


def inference_costs(model: nn.Module, variables: Variables, image_shape: tuple[int, ...], *,
                    nonzero_params: int | None = None) -> dict[str, Any]:
    """Parameters (all, and nonzero where masks zero some) and FLOPs per image; speeds are
    measured side by side by `throughput`."""
    params = count_params(variables["params"])
    return {"params": params, "nonzero_params": params if nonzero_params is None else nonzero_params,
            "flops": flops_per_image(model, variables, image_shape)}
