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


# ------------------------------------------------------------------------ mask algebra


def small_masks(conv_rows, dense_rows):
    return {"Conv_0": {"kernel": jnp.array(conv_rows, bool).reshape(1, 1, 2, 3), "bias": None},
            "Dense_0": {"kernel": jnp.array(dense_rows, bool), "bias": None}}


def test_layer_stats_count_remaining_and_dead_channels():
    # conv kernel 1x1x2x3 (in 2, out 3): output channel 1 and input channel 1 fully pruned.
    m = small_masks([[1, 0, 1], [0, 0, 0]], [[1, 1], [0, 0], [0, 1]])
    conv, dense = sparsity.layer_stats(m)
    assert (conv.path, conv.shape, conv.total, conv.remaining) == ("Conv_0/kernel", (1, 1, 2, 3), 6, 2)
    assert conv.density == pytest.approx(1 / 3) and (conv.dead_out, conv.dead_in) == (1, 1)
    assert (dense.remaining, dense.dead_out, dense.dead_in) == (3, 0, 1)
    params = {"Conv_0": {"kernel": jnp.ones((1, 1, 2, 3)), "bias": jnp.ones(3)},
              "Dense_0": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}}
    assert sparsity.summary(m, params) == pytest.approx(
        {"prunable": 12, "remaining": 5, "density": 5 / 12, "sparsity": 7 / 12, "unprunable": 5})


def test_set_operations_and_iou_by_hand():
    a = small_masks([[1, 1, 0], [0, 1, 0]], [[1, 0], [1, 0], [0, 0]])
    b = small_masks([[1, 0, 0], [1, 1, 0]], [[0, 0], [0, 0], [0, 0]])
    np.testing.assert_array_equal(sparsity.intersection(a, b)["Conv_0"]["kernel"].reshape(2, 3),
                                  [[1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(sparsity.union(a, b)["Conv_0"]["kernel"].reshape(2, 3),
                                  [[1, 1, 0], [1, 1, 0]])
    np.testing.assert_array_equal(sparsity.difference(a, b)["Conv_0"]["kernel"].reshape(2, 3),
                                  [[0, 1, 0], [0, 0, 0]])
    assert sparsity.difference(a, b)["Conv_0"]["bias"] is None
    # conv: |a & b| = 2, |a | b| = 4; dense: |a & b| = 0, |a | b| = 2.
    assert sparsity.iou(a, b) == {"Conv_0/kernel": 0.5, "Dense_0/kernel": 0.0}
    assert sparsity.iou(b, b)["Dense_0/kernel"] == 1.0  # both keep nothing


def test_report_table_and_plot(tmp_path):
    a = small_masks([[1, 1, 1], [1, 1, 1]], [[1, 1], [1, 1], [1, 1]])
    b = small_masks([[1, 0, 1], [0, 0, 0]], [[1, 1], [0, 0], [0, 1]])
    table = sparsity.report_table([a, b], ["dense", "round 1"])
    assert "| Conv_0/kernel | 1x1x2x3 | 6 | 1.000 | 0.333 | 1 |" in table
    assert "| **all** | | 12 | **1.000** | **0.417** | |" in table
    sparsity.plot_density(tmp_path / "d.png", [a, b], ["dense", "round 1"])
    assert (tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"


def test_layers_come_in_network_order():
    m = {f"Conv_{i}": {"kernel": jnp.ones((1, 1, 1, 1), bool)} for i in (0, 1, 2, 10, 11)}
    m["Dense_0"] = {"kernel": jnp.ones((1, 1), bool)}
    assert [s.path for s in sparsity.layer_stats(m)] == [
        "Conv_0/kernel", "Conv_1/kernel", "Conv_2/kernel", "Conv_10/kernel", "Conv_11/kernel", "Dense_0/kernel"]


@pytest.mark.parametrize("name, first, last", [
    ("resnet18", ["Conv_0/kernel", "BasicBlock_0/Conv_0/kernel"], ["BasicBlock_7/Conv_1/kernel", "Dense_0/kernel"]),
    ("mobilenetv2", ["Conv_0/kernel", "InvertedResidual_0/Conv_0/kernel"], ["InvertedResidual_16/Conv_2/kernel",
                                                                            "Conv_1/kernel", "Dense_0/kernel"]),
])
def test_a_models_stem_comes_first_and_its_head_last(name, first, last):
    # The stem is a top-level Conv_0, which sorts after the blocks by name; the head follows them.
    model = models.get(name, 10, widths=None)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False))
    m = masks.init(jax.tree.map(lambda s: jnp.zeros((1,) * len(s.shape)), shapes["params"]))
    paths = [s.path for s in sparsity.layer_stats(m)]
    assert paths[:len(first)] == first and paths[-len(last):] == last
