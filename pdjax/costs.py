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


# ------------------------------------------------------------------------- a run's cost plan

# Sustained training throughput assumed for a dry run's cost plan, in FLOP/s: a fraction of each
# accelerator's dense peak that small CIFAR/Tiny-ImageNet networks at batch 128 plausibly reach.
# Assumptions, not measurements: docs/scaling.md says why these, and benchmarks/gpu_check.py
# measures the real rate on a GPU.
ASSUMED_THROUGHPUT = {
    "H200 float32 (TF32)": 100e12,  # 20% of 495 TFLOP/s dense TF32
    "H200 bfloat16": 250e12,  # 25% of 989 TFLOP/s dense bfloat16
    "TPU v5e chip bfloat16": 60e12,  # 30% of 197 TFLOP/s bfloat16
}


def plan_rows(plan: list[dict[str, Any]], throughput: Mapping[str, float] = ASSUMED_THROUGHPUT) -> list[dict[str, Any]]:
    """A dry run's plan (`pdjax.designs.stage.Stages.plan`) with each stage's total training
    FLOPs (FLOPs per image x images x epochs) and hours at each assumed throughput, and a total
    row. A stage whose data is not one of the paper's has no images, so no total."""
    rows, total = [], 0.0
    for entry in plan:
        flops = None if entry["train_images"] is None else \
            entry["train_flops_per_image"] * entry["train_images"] * entry["epochs"]
        total += flops or 0.0
        rows.append({**entry, "gflops_per_image": entry["train_flops_per_image"] / 1e9,
                     "pflops": None if flops is None else flops / 1e15,
                     **{name: None if flops is None else flops / rate / 3600 for name, rate in throughput.items()}})
    rows.append({"stage": "total", "pflops": total / 1e15, **{name: total / rate / 3600 for name, rate in throughput.items()}})
    return rows


def plan_markdown(plan: list[dict[str, Any]], throughput: Mapping[str, float] = ASSUMED_THROUGHPUT) -> str:
    """`plan_rows` as a markdown table."""
    from pdjax import render

    columns = [("stage", "stage", "s"), ("model", "model", "s"), ("epochs", "epochs", "d"),
               ("train_images", "training images", ","), ("gflops_per_image", "GFLOPs per image (train)", ".3f"),
               ("pflops", "PFLOPs", ".2f")]
    columns += [(name, f"hours, {name} at {rate / 1e12:.0f} TFLOP/s", ".2f") for name, rate in throughput.items()]
    return render.markdown_table(plan_rows(plan, throughput), columns)
