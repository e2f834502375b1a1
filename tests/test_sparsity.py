"""The mask algebra: per-layer statistics, set operations, reports and plots (pdjax.sparsity)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pdjax import masks, models, sparsity


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
