import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pdjax import masks, models, sparsity


def literal_params():
    # A 2x4 and a 3x6x7 kernel (as jaxpruner's tests), a bias and a BatchNorm scale.
    a = jnp.array([[0.9, -0.95, 0.3, 0.4], [-0.5, 0.2, 0.8, -0.005]])
    b = jnp.arange(3 * 6 * 7, dtype=jnp.float32).reshape(3, 6, 7) / 100.0 - 0.5
    return {"Dense_0": {"kernel": a, "bias": jnp.ones(4)},
            "Conv_0": {"kernel": b, "bias": jnp.zeros(7)},
            "BatchNorm_0": {"scale": jnp.ones(7), "bias": jnp.zeros(7)}}


def test_mask_tree_mirrors_the_parameter_tree():
    params = literal_params()
    m = masks.init(params)
    assert jax.tree.structure(m, is_leaf=masks.is_none) == jax.tree.structure(params)
    assert m["Dense_0"]["bias"] is None and m["BatchNorm_0"]["scale"] is None
    assert m["Conv_0"]["kernel"].dtype == jnp.bool_ and m["Conv_0"]["kernel"].shape == (3, 6, 7)
    assert masks.total(m) == 8 + 126 and masks.density(m) == 1.0


def test_vgg19_global_rounds_leave_the_exact_counts():
    params = models.init(models.get("vgg19", 100), jax.random.key(0), (32, 32, 3))["params"]
    m = masks.init(params)
    assert masks.remaining(m) == 20_070_080
    m = masks.prune_global(params, m, 0.2)
    assert masks.remaining(m) == 16_056_064
    m = masks.prune_global(masks.apply(params, m), m, 0.2)
    assert masks.remaining(m) == 12_844_851
    assert jax.tree.structure(m, is_leaf=masks.is_none) == jax.tree.structure(params)


def test_drop_smallest_clears_what_a_stable_sort_would():
    rng = np.random.default_rng(0)
    for trial in range(40):
        n = int(rng.integers(1, 300))
        weights = rng.integers(0, 6, n).astype(np.float32)  # many ties
        if trial % 4 == 0:
            weights[rng.integers(0, n, 3)] = np.nan
        kept = rng.random(n) < 0.7
        alive = np.flatnonzero(kept)
        for count in sorted({0, 1, len(alive) // 2, len(alive)}):
            expected = kept.copy()
            expected[alive[np.argsort(weights[alive], kind="stable")[:count]]] = False
            np.testing.assert_array_equal(masks._drop_smallest(weights, kept, count), expected)


def test_prune_global_ranks_the_whole_network_and_masks_only_shrink():
    params = literal_params()
    m = masks.prune_global(params, masks.init(params), 0.25)  # round(0.25 * 134) = 34 removed
    assert masks.remaining(m) == 100
    dense = np.asarray(m["Dense_0"]["kernel"])
    # |w| of the conv run 0.00, 0.01, 0.01, 0.02, 0.02, ... up to 0.75; the 34 smallest
    # magnitudes overall are the 33 conv weights with |w| <= 0.16 and the dense 0.005.
    np.testing.assert_array_equal(dense, [[True, True, True, True], [True, True, True, False]])
    conv = np.abs(np.asarray(params["Conv_0"]["kernel"]))
    assert np.all(conv[~np.asarray(m["Conv_0"]["kernel"])] <= 0.16 + 1e-6)
    m2 = masks.prune_global(masks.apply(params, m), m, 0.5)
    assert masks.remaining(m2) == 50
    assert not np.any(np.asarray(m2["Conv_0"]["kernel"]) & ~np.asarray(m["Conv_0"]["kernel"]))


def test_ties_are_broken_by_position_so_the_count_is_exact():
    params = {"a": {"kernel": jnp.ones((2, 3))}, "b": {"kernel": jnp.ones((4,))}}
    m = masks.prune_global(params, masks.init(params), 0.5)  # 5 of 10 tied weights
    assert masks.remaining(m) == 5
    # Leaves in tree order ("a" before "b"), then flat index: the first five go.
    np.testing.assert_array_equal(m["a"]["kernel"], [[False, False, False], [False, False, True]])
    np.testing.assert_array_equal(m["b"]["kernel"], [True, True, True, True])
    # Python's round: 0.25 * 10 = 2.5 rounds to 2.
    assert masks.remaining(masks.prune_global(params, masks.init(params), 0.25)) == 8


def test_prune_layerwise_prunes_each_layer_by_the_fraction():
    params = literal_params()
    m = masks.prune_layerwise(params, masks.init(params), 0.5)
    stats = {s.path: s for s in sparsity.layer_stats(m)}
    assert stats["Dense_0/kernel"].remaining == 4 and stats["Conv_0/kernel"].remaining == 63
    # Dense |w|: 0.9 0.95 0.3 0.4 / 0.5 0.2 0.8 0.005 -> the four smallest go.
    np.testing.assert_array_equal(m["Dense_0"]["kernel"], [[True, True, False, False], [True, False, True, False]])


def test_apply_zeroes_exactly_the_pruned_weights():
    params = literal_params()
    m = masks.prune_global(params, masks.init(params), 0.5)
    applied = masks.apply(params, m)
    for key in ("Dense_0", "Conv_0"):
        k, mk = np.asarray(applied[key]["kernel"]), np.asarray(m[key]["kernel"])
        assert np.all(k[~mk] == 0) and np.array_equal(k[mk], np.asarray(params[key]["kernel"])[mk])
    assert applied["BatchNorm_0"]["scale"] is params["BatchNorm_0"]["scale"]


def test_bad_input_names_the_path():
    params = literal_params()
    m = masks.init(params)
    with pytest.raises(masks.MaskError, match=r"pruning fraction must be in \[0, 1\), got 1.0"):
        masks.prune_global(params, m, 1.0)
    with pytest.raises(masks.MaskError, match=r"got -0.1"):
        masks.prune_layerwise(params, m, -0.1)
    wrong_shape = {**m, "Conv_0": {"kernel": jnp.ones((3, 6, 6), bool), "bias": None}}
    with pytest.raises(masks.MaskError, match=r"mask at Conv_0/kernel has shape \(3, 6, 6\)"):
        masks.prune_global(params, wrong_shape, 0.2)
    missing = {k: v for k, v in m.items() if k != "BatchNorm_0"}
    with pytest.raises(masks.MaskError, match=r"parameter BatchNorm_0/bias has no mask entry"):
        masks.check(params, missing)
    with pytest.raises(masks.MaskError, match=r"mask trees differ: BatchNorm_0/bias is only in the first"):
        sparsity.union(m, missing)
    other = {**m, "Dense_0": {"kernel": None, "bias": None}}
    with pytest.raises(masks.MaskError, match=r"mask trees differ at Dense_0/kernel: \(2, 4\) vs None"):
        sparsity.intersection(m, other)
