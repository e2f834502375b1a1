"""The mask algebra: per-layer statistics of mask trees, set operations, and reports.

Everything here returns plain Python numbers (computed eagerly, outside `jit`), because the
student's widths derived from them become array shapes.

Usage:
    stats = pdjax.sparsity.layer_stats(masks)         # [LayerStats(path='Conv_0/kernel', ...), ...]
    pdjax.sparsity.summary(masks, params)             # whole-network figures
    pdjax.sparsity.iou(masks_round_1, masks_round_2)  # per-layer overlap
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pdjax import masks as masks_lib
from pdjax.models import count_params
from pdjax.render import save_figure
from pdjax.types import Masks, Params


@dataclasses.dataclass(frozen=True)
class LayerStats:
    """Facts about one prunable kernel's mask.

    Attributes:
      path: the kernel's path in the parameter tree ('Conv_3/kernel').
      shape: the kernel's shape (HWIO for convolutions, (in, out) for linear layers).
      total: weights in the kernel.
      remaining: weights kept.
      density: remaining / total.
      dead_out: output channels whose weights are all pruned (a structured export drops them).
      dead_in: input channels whose weights are all pruned.
    """

    path: str
    shape: tuple[int, ...]
    total: int
    remaining: int
    density: float
    dead_out: int
    dead_in: int


def natural_key(path: str) -> tuple:
    """Sort key that puts Conv_2 before Conv_10 (pytrees sort dict keys as strings)."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path))


def network_key(path: str) -> tuple:
    """Sort key that puts the kernels of pdjax's models in the order their layers run.

    Flax numbers sibling layers of one class in call order (Conv_0, Conv_1, ...), and every
    model of `pdjax.models` calls a top-level `Conv_0` first (a VGG's first layer, a ResNet's or
    a MobileNetV2's stem), then its blocks (`BasicBlock_3/Conv_1/kernel`), then its other
    top-level layers (a VGG's later convolutions, MobileNetV2's last 1x1 convolution, the
    classifier). Within each part, natural order (Conv_2 before Conv_10).
    """
    parts = path.split("/")
    part = 0 if parts[0] == "Conv_0" else 1 if len(parts) > 2 else 2
    return (part, natural_key(path))


def layer_stats(masks: Masks) -> list[LayerStats]:
    """Per-layer statistics of every prunable kernel, in network order (`network_key`)."""
    out = []
    for key, m in jax.tree_util.tree_flatten_with_path(masks)[0]:
        m = np.asarray(jax.device_get(m), bool)
        # Output channels are the last axis, input channels the one before (HWIO / (in, out)).
        per_out = m.reshape(-1, m.shape[-1]).any(axis=0)
        in_axis = m.ndim - 2
        per_in = np.moveaxis(m, in_axis, 0).reshape(m.shape[in_axis], -1).any(axis=1)
        kept = int(m.sum())
        out.append(LayerStats(masks_lib.path_str(key), tuple(m.shape), int(m.size), kept,
                              kept / m.size, int((~per_out).sum()), int((~per_in).sum())))
    return sorted(out, key=lambda s: network_key(s.path))


def summary(masks: Masks, params: Params | None = None) -> dict[str, Any]:
    """Whole-network figures: prunable, remaining, global density and sparsity, unprunable."""
    prunable = masks_lib.total(masks)
    remaining = masks_lib.remaining(masks)
    out = {"prunable": prunable, "remaining": remaining, "density": remaining / prunable,
           "sparsity": 1 - remaining / prunable}
    if params is not None:
        masks_lib.check(params, masks)
        out["unprunable"] = count_params(params) - prunable
    return out


def _combine(a: Masks, b: Masks, op) -> Masks:
    masks_lib.check_same_structure(a, b)
    return jax.tree.map(lambda x, y: None if x is None else op(x, y), a, b, is_leaf=masks_lib.is_none)


def intersection(a: Masks, b: Masks) -> Masks:
    """Weights kept in both."""
    return _combine(a, b, jnp.logical_and)


def union(a: Masks, b: Masks) -> Masks:
    """Weights kept in either."""
    return _combine(a, b, jnp.logical_or)


def difference(a: Masks, b: Masks) -> Masks:
    """Weights kept in `a` but not in `b`."""
    return _combine(a, b, lambda x, y: jnp.logical_and(x, jnp.logical_not(y)))


def iou(a: Masks, b: Masks) -> dict[str, float]:
    """Per-layer intersection over union of the kept weights (1.0 where both keep nothing)."""
    both = layer_stats(intersection(a, b))
    either = layer_stats(union(a, b))
    return {i.path: (i.remaining / u.remaining if u.remaining else 1.0) for i, u in zip(both, either)}


def report_table(rounds: Sequence[Masks], labels: Sequence[str] | None = None) -> str:
    """A markdown table: one row per layer, its size, and its density after each round."""
    labels = list(labels) if labels is not None else [f"round {i}" for i in range(len(rounds))]
    stats = [layer_stats(m) for m in rounds]
    header = "| layer | shape | weights | " + " | ".join(labels) + " | dead out (last) |"
    lines = [header, "|---|---|---:|" + "---:|" * len(labels) + "---:|"]
    for i, layer in enumerate(stats[0]):
        cells = [f"{s[i].density:.3f}" for s in stats]
        lines.append(f"| {layer.path} | {'x'.join(map(str, layer.shape))} | {layer.total:,} | "
                     + " | ".join(cells) + f" | {stats[-1][i].dead_out} |")
    totals = [summary(m) for m in rounds]
    lines.append(f"| **all** | | {totals[0]['prunable']:,} | "
                 + " | ".join(f"**{t['density']:.3f}**" for t in totals) + " | |")
    return "\n".join(lines) + "\n"


def plot_density(path: str | Path, rounds: Sequence[Masks], labels: Sequence[str] | None = None,
                 title: str = "per-layer density") -> None:
    """A PNG with one line per round: density of each prunable layer, in network order."""
    labels = list(labels) if labels is not None else [f"round {i}" for i in range(len(rounds))]
    plot_layer_density(path, {label: layer_stats(m) for label, m in zip(labels, rounds)}, title)


def plot_layer_density(path: str | Path, rounds: Mapping[str, Sequence[LayerStats | Mapping[str, Any]]],
                       title: str = "per-layer density") -> None:
    """`plot_density` from each round's layer statistics: `LayerStats`, or their dicts as
    results.json's `layer_density` holds them (so a finished run's plot can be drawn again)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = {label: sorted(((s.path, s.density) if isinstance(s, LayerStats) else (s["path"], s["density"])
                            for s in stats), key=lambda p: network_key(p[0]))
             for label, stats in rounds.items()}
    names = [p.rsplit("/", 1)[0] for p, _ in next(iter(lines.values()), [])]
    # Rounds in a sequential colormap (dense teacher dark, sparsest round light); the legend
    # beside the axes, where it covers no layer.
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names)) + 1.8, 4), dpi=120)
    colors = plt.get_cmap("viridis")([i / max(len(lines) - 1, 1) * 0.9 for i in range(len(lines))])
    for (label, points), color in zip(lines.items(), colors):
        ax.plot(range(len(points)), [d for _, d in points], marker=".", label=label, color=color)
    ax.set_xticks(range(len(names)), names, rotation=70, fontsize=7)
    ax.set_ylabel("density (kept share)")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    save_figure(fig, path)
