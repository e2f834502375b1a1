"""Pruning masks as pytrees with the structure of the parameters they mask.

The rule: a mask tree holds a boolean array (True = kept) for every prunable kernel (every
convolution and linear kernel, 1x1 and depthwise included) and `None` for every other leaf
(biases, BatchNorm, shortcut scales), so that

    jax.tree.structure(masks, is_leaf=masks_lib.is_none) == jax.tree.structure(params)

Usage:
    masks = pdjax.masks.init(params)
    masks = pdjax.masks.prune_global(params, masks, 0.2)   # one round: 20% of what is left
    pdjax.masks.density(masks)                              # 0.8
    pdjax.masks.prune_random_like(masks, reference, seed=0) # reference's per-layer counts, random positions
    logits = model.apply({"params": pdjax.masks.apply(params, masks), ...}, x)
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pdjax.models import is_prunable
from pdjax.types import Masks, Params, Variables


class MaskError(ValueError):
    """Masks that do not fit the parameters, or two mask trees that do not fit each other."""


def is_none(x: Any) -> bool:
    return x is None


def path_str(path: tuple) -> str:
    """'Conv_0/kernel' for a pytree key path (dict keys, sequence indices, NamedTuple fields)."""
    return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def _names(path: tuple) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def init(params: Params, prunable: Callable[[tuple[str, ...], Any], bool] = is_prunable) -> Masks:
    """All-True masks for the prunable leaves of `params`, None elsewhere."""
    # Made on the host and transferred: an eager jnp.ones would compile one program per shape.
    return jax.tree_util.tree_map_with_path(
        lambda path, p: jnp.asarray(np.ones(p.shape, bool)) if prunable(_names(path), p) else None, params)


def check(params: Params, masks: Masks) -> None:
    """Raises MaskError naming the first path where `masks` does not fit `params`."""
    p_leaves = dict((path_str(k), v) for k, v in jax.tree_util.tree_flatten_with_path(params)[0])
    m_leaves = jax.tree_util.tree_flatten_with_path(masks, is_leaf=is_none)[0]
    m_paths = [path_str(k) for k, _ in m_leaves]
    for (key, m), path in zip(m_leaves, m_paths):
        if path not in p_leaves:
            raise MaskError(f"mask at {path} has no parameter")
        if m is not None and tuple(m.shape) != tuple(p_leaves[path].shape):
            raise MaskError(f"mask at {path} has shape {tuple(m.shape)}, the parameter "
                            f"{tuple(p_leaves[path].shape)}")
    missing = [p for p in p_leaves if p not in set(m_paths)]
    if missing:
        raise MaskError(f"parameter {missing[0]} has no mask entry (use None for unpruned leaves)")


def check_same_structure(a: Masks, b: Masks) -> None:
    """Raises MaskError naming the first path where two mask trees differ in structure or shape."""
    a_leaves = jax.tree_util.tree_flatten_with_path(a, is_leaf=is_none)[0]
    b_leaves = dict((path_str(k), v) for k, v in jax.tree_util.tree_flatten_with_path(b, is_leaf=is_none)[0])
    a_paths = set()
    for key, x in a_leaves:
        path = path_str(key)
        a_paths.add(path)
        if path not in b_leaves:
            raise MaskError(f"mask trees differ: {path} is only in the first")
        y = b_leaves[path]
        if (x is None) != (y is None) or (x is not None and x.shape != y.shape):
            shape = lambda m: "None" if m is None else tuple(m.shape)  # noqa: E731
            raise MaskError(f"mask trees differ at {path}: {shape(x)} vs {shape(y)}")
    extra = [p for p in b_leaves if p not in a_paths]
    if extra:
        raise MaskError(f"mask trees differ: {extra[0]} is only in the second")


def apply(params: Params, masks: Masks | None) -> Params:
    """Parameters with pruned weights zeroed (weight x mask); jit-friendly."""
    if masks is None:
        return params
    return jax.tree.map(lambda m, p: p if m is None else p * m.astype(p.dtype), masks, params,
                        is_leaf=is_none)


def apply_to_variables(variables: Variables, masks: Masks | None) -> Variables:
    """A model's variables with `apply` done to their params (the rest, e.g. BatchNorm
    statistics, as they are): what a masked network runs with."""
    return {**variables, "params": apply(variables["params"], masks)}


def masked_optimizer(optimizer: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """Wraps any optax optimizer so that pruned weights stay exactly zero.

    The wrapped `update(grads, state, params, masks=masks)` zeroes the gradients of pruned
    weights before the optimizer sees them (its moments stay clean) and the updates it returns
    for them (weight decay, momentum or adam's epsilon cannot move them). `masks=None` (or a
    call without masks) passes everything through: dense training. The optimizer state is the
    wrapped optimizer's own, so one state serves every mask.

    Usage:
        optimizer = pdjax.masks.masked_optimizer(optax.adamw(1e-3))
        updates, opt_state = optimizer.update(grads, opt_state, params, masks=masks)
        params = optax.apply_updates(params, updates)   # pruned weights are still 0
    """
    inner = optax.with_extra_args_support(optimizer)

    def init(params: Params) -> optax.OptState:
        return inner.init(params)

    def update(updates: Params, state: optax.OptState, params: Params | None = None, *,
               masks: Masks | None = None, **extra: Any) -> tuple[Params, optax.OptState]:
        updates = apply(updates, masks)
        updates, state = inner.update(updates, state, params, **extra)
        return apply(updates, masks), state

    return optax.GradientTransformationExtraArgs(init, update)


def _check_fraction(fraction: float) -> None:
    if not 0.0 <= fraction < 1.0:
        raise MaskError(f"pruning fraction must be in [0, 1), got {fraction}")


def _flat_prunable(params: Params, masks: Masks) -> tuple[list, list[np.ndarray], list[np.ndarray]]:
    check(params, masks)
    m_leaves, treedef = jax.tree.flatten(masks, is_leaf=is_none)
    p_leaves = treedef.flatten_up_to(params)
    index = [i for i, m in enumerate(m_leaves) if m is not None]
    weights = [np.abs(np.asarray(jax.device_get(p_leaves[i]), np.float32)).ravel() for i in index]
    kept = [np.asarray(jax.device_get(m_leaves[i]), bool).ravel() for i in index]
    return [m_leaves, treedef, index], weights, kept


def _rebuild(meta: list, kept: list[np.ndarray]) -> Masks:
    m_leaves, treedef, index = meta
    leaves = list(m_leaves)
    for i, k in zip(index, kept):
        leaves[i] = jnp.asarray(k.reshape(m_leaves[i].shape))
    return jax.tree.unflatten(treedef, leaves)


def _drop_smallest(weights: np.ndarray, kept: np.ndarray, count: int) -> np.ndarray:
    """Clears the `count` smallest still-kept entries; ties go to the lower index.

    What a stable sort of the kept weights would clear, found in linear time (a VGG19's 20M
    weights: a partition instead of a sort): every kept weight below the `count`-th smallest
    value, then the lowest-indexed kept weights equal to it until `count` are cleared."""
    out = kept.copy()
    if count <= 0:
        return out
    alive = np.flatnonzero(kept)
    values = weights[alive]
    threshold = np.partition(values, count - 1)[count - 1]
    if np.isnan(threshold):  # NaNs rank last, as in a sort
        below, equal = ~np.isnan(values), np.isnan(values)
    else:
        below, equal = values < threshold, values == threshold
    tied = np.flatnonzero(equal)[:count - int(below.sum())]
    out[alive[below]] = False
    out[alive[tied]] = False
    return out


def prune_global(params: Params, masks: Masks, fraction: float) -> Masks:
    """One round of global magnitude pruning.

    Ranks the raw |w| of all still-unpruned prunable weights of the whole network together and
    removes exactly `round(fraction * still_unpruned)` of them (Python's `round`); ties are
    broken by position (earlier leaf, then earlier index, goes first). Masks only shrink.
    Runs on the host (the count is exact and deterministic on every host).
    """
    _check_fraction(fraction)
    meta, weights, kept = _flat_prunable(params, masks)
    sizes = [len(w) for w in weights]
    all_kept = _drop_smallest(np.concatenate(weights), np.concatenate(kept),
                              round(fraction * int(sum(k.sum() for k in kept))))
    return _rebuild(meta, np.split(all_kept, np.cumsum(sizes)[:-1]))


def prune_layerwise(params: Params, masks: Masks, fraction: float) -> Masks:
    """One round of layer-wise magnitude pruning: each layer loses round(fraction x its kept)."""
    _check_fraction(fraction)
    meta, weights, kept = _flat_prunable(params, masks)
    return _rebuild(meta, [_drop_smallest(w, k, round(fraction * int(k.sum())))
                           for w, k in zip(weights, kept)])


def layer_remaining(masks: Masks) -> dict[str, int]:
    """Kept weights of every prunable leaf, by path ('Conv_0/kernel' -> count)."""
    return {path_str(path): int(np.asarray(jax.device_get(m)).sum())
            for path, m in jax.tree_util.tree_flatten_with_path(masks, is_leaf=is_none)[0] if m is not None}


def prune_random_like(masks: Masks, reference: Masks, seed: int | tuple[int, ...]) -> Masks:
    """Random pruning with another mask tree's per-layer counts: every prunable leaf keeps exactly
    as many weights as `reference` keeps there, chosen uniformly at random among the weights
    `masks` still keeps (open_lth's `randomly_prune`, jaxpruner's random pruner). With the
    magnitude round's masks as `reference`, it is the control that keeps the layer-wise sparsity
    of magnitude pruning and drops its choice of which weights.

    Args:
      masks: the current masks; the result is a subset of them (masks only shrink).
      reference: masks of the same structure whose per-layer kept counts are matched.
      seed: seeds numpy's generator (`numpy.random.default_rng(seed)`): the same masks on every
        host and every run.

    Raises:
      MaskError: the trees differ in structure, or `reference` keeps more weights in a layer than
        `masks` still does.
    """
    check_same_structure(masks, reference)
    rng = np.random.default_rng(seed)
    m_leaves, treedef = jax.tree.flatten(masks, is_leaf=is_none)
    r_leaves = treedef.flatten_up_to(reference)
    paths = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(masks, is_leaf=is_none)[0]]
    out = []
    for path, m, r in zip(paths, m_leaves, r_leaves):
        if m is None:
            out.append(None)
            continue
        kept = np.asarray(jax.device_get(m), bool)
        count = int(np.asarray(jax.device_get(r)).sum())
        alive = np.flatnonzero(kept.ravel())
        if count > len(alive):
            raise MaskError(f"{path}: the reference keeps {count} weights, the current masks only {len(alive)}")
        chosen = np.zeros(kept.size, bool)
        chosen[rng.choice(alive, size=count, replace=False)] = True
        out.append(jnp.asarray(chosen.reshape(kept.shape)))
    return jax.tree.unflatten(treedef, out)


def remaining(masks: Masks) -> int:
    """Number of kept (unpruned) prunable weights."""
    return int(sum(np.count_nonzero(jax.device_get(m)) for m in jax.tree.leaves(masks)))  # host count: no compile


def total(masks: Masks) -> int:
    """Number of prunable weights."""
    return int(sum(m.size for m in jax.tree.leaves(masks)))


def density(masks: Masks) -> float:
    """Kept share of the prunable weights (1 - sparsity)."""
    return remaining(masks) / total(masks)
