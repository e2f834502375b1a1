import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pdjax import models


def abstract_params(name, num_classes=100, shape=(32, 32, 3), widths=None):
    model = models.get(name, num_classes, widths=widths)
    return jax.eval_shape(lambda: models.init(model, jax.random.key(0), shape))["params"]


@pytest.mark.parametrize("name, classes, prunable", [("vgg19", 100, 20_070_080), ("vgg11", 100, 9_268_928)])
def test_paper_prunable_counts(name, classes, prunable):
    assert models.count_params(abstract_params(name, classes), prunable_only=True) == prunable


def test_vgg19_dbl_plan_and_counts():
    params = abstract_params("vgg19_dbl")
    widths = [params[f"Conv_{i}"]["kernel"].shape[-1] for i in range(16)]
    assert widths == [64, 128, 256, 256, 512, 512, 512, 512, 1024, 1024, 1024, 1024, 1024, 1024, 1024, 512]
    assert params["Dense_0"]["kernel"].shape == (512, 100)


@pytest.mark.parametrize("name, shape, widths", [
    ("vgg11", (32, 32, 3), (4, 8, 8, 8, 16, 16, 16, 16)),
    ("vgg13", (32, 32, 3), None),
    ("vgg16_tiny", (64, 64, 3), (4,) * 13 + (16, 16)),
    ("resnet18", (32, 32, 3), (4, 8, 8, 16)),
    ("resnet50", (32, 32, 3), (2, 4, 4, 8)),
    ("mobilenetv2", (32, 32, 3), (4, 4, 4, 4, 8, 8, 8, 8, 16)),
])
def test_output_shape_and_modes(name, shape, widths):
    model = models.get(name, 7, widths=widths)
    variables = models.init(model, jax.random.key(0), shape)
    x = jax.random.normal(jax.random.key(1), (4, *shape))
    apply = jax.jit(model.apply, static_argnames=("train", "mutable"))
    eval_out = apply(variables, x, train=False)
    assert eval_out.shape == (4, 7)
    # Eval mode is deterministic and leaves BatchNorm statistics alone.
    np.testing.assert_array_equal(eval_out, apply(variables, x, train=False))
    train_out, updates = apply(variables, x, train=True, mutable=("batch_stats",),
                               rngs={"dropout": jax.random.key(2)})
    assert train_out.shape == (4, 7)
    # Train mode normalizes with batch statistics and moves the running averages.
    assert not np.allclose(train_out, eval_out)
    moved = jax.tree.map(lambda a, b: not np.allclose(a, b), updates["batch_stats"], variables["batch_stats"])
    assert any(jax.tree.leaves(moved))


def test_widths_override_and_errors():
    params = abstract_params("resnet18", 10, widths=(8, 16, 32, 64))
    assert params["Conv_0"]["kernel"].shape == (3, 3, 3, 64)  # the stem stays 64 wide
    assert params["Dense_0"]["kernel"].shape == (64, 10)
    # Identity shortcuts carry a learnable per-channel scale; changed shapes a 1x1 conv.
    assert params["BasicBlock_0"]["shortcut_conv"]["kernel"].shape == (1, 1, 64, 8)
    assert params["BasicBlock_1"]["shortcut_scale"]["scale"].shape == (8,)
    assert params["BasicBlock_2"]["shortcut_conv"]["kernel"].shape == (1, 1, 8, 16)
    with pytest.raises(ValueError, match="unknown model"):
        models.get("vgg7", 10)
    with pytest.raises(ValueError, match="8 convolutions"):
        models.get("vgg11", 10, widths=(4, 4))
    with pytest.raises(ValueError, match=">= 1"):
        models.get("vgg11", 10, widths=(0,) * 8)
    tiny = abstract_params("vgg16_tiny", 200, shape=(64, 64, 3))
    assert [tiny[f"Dense_{i}"]["kernel"].shape for i in range(3)] == [(2048, 1024), (1024, 1024), (1024, 200)]
    with pytest.raises(ValueError, match="13 convolution widths and 2 head widths"):
        models.get("vgg16_tiny", 10, widths=(4,) * 13)
    with pytest.raises(ValueError, match="4 stage widths"):
        models.get("resnet18", 10, widths=(1, 2))


def test_paper_initialization():
    model = models.get("vgg11", 10, widths=(64, 128, 128, 128, 128, 128, 128, 128))
    params = models.init(model, jax.random.key(0), (32, 32, 3))["params"]
    kernel = np.asarray(params["Conv_2"]["kernel"])  # 3x3x128x128: fan_in 1152
    assert abs(kernel.std() - np.sqrt(2 / 1152)) < 0.02 * np.sqrt(2 / 1152)
    # Plain normal, not truncated: values beyond 2 standard deviations occur (~4.6%).
    assert np.mean(np.abs(kernel) > 2 * np.sqrt(2 / 1152)) > 0.03
    assert np.all(np.asarray(params["Conv_2"]["bias"]) == 0)
    assert np.all(np.asarray(params["BatchNorm_0"]["scale"]) == 1)


@pytest.mark.parametrize("name", ["vgg11", "resnet18"])
def test_bfloat16_compute_keeps_float32_parameters_and_close_logits(name):
    widths = models.scaled_widths(name, 1 / 16)
    f32 = models.get(name, 10, widths=widths)
    bf16 = models.get(name, 10, widths=widths, dtype="bfloat16")
    variables = models.init(f32, jax.random.key(0), (32, 32, 3))
    bf16_variables = models.init(bf16, jax.random.key(0), (32, 32, 3))
    # Same parameter tree, float32 in both: masks and checkpoints do not see the compute dtype.
    assert jax.tree.structure(variables) == jax.tree.structure(bf16_variables)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(bf16_variables))
    x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    # Jitted: an eager apply compiles every operation on its own (~130 programs for a VGG11).
    a = jax.jit(functools.partial(f32.apply, train=False))(variables, x)
    b = jax.jit(functools.partial(bf16.apply, train=False))(variables, x)
    assert b.dtype == jnp.bfloat16
    scale = float(jnp.max(jnp.abs(a)))
    assert float(jnp.max(jnp.abs(a - b.astype(jnp.float32)))) < 0.05 * scale
    assert not np.array_equal(np.asarray(a), np.asarray(b.astype(jnp.float32)))
    with pytest.raises(ValueError, match="compute dtype"):
        models.get(name, 10, widths=widths, dtype="float8")


# The tests below share full-width initialisations (_initial_params), and with them
# tests/test_students.py's ResNet18 and MobileNetV2 students: one worker runs them all.
INITIAL_PARAMS = pytest.mark.xdist_group("initial_params")


@functools.lru_cache(maxsize=None)
def _initial_params(name, shape, num_classes):
    return models.init(models.get(name, num_classes), jax.random.key(0), shape)["params"]


def _kernel_std(name, shape, path, num_classes=200):
    params = _initial_params(name, shape, num_classes)
    for key in path:
        params = params[key]
    return float(np.std(np.asarray(params)))


# PAPER.md, "Initialisation outside the CIFAR VGGs": He-normal with fan_out = out channels x kernel
# area for every conv (depthwise: fan_out = channels x 9); the ResNet classifier keeps PyTorch's
# Linear default U(+-1/sqrt(fan_in)), std 1/sqrt(3 fan_in); other linears normal(0, 0.01).
@pytest.mark.parametrize("name, path, expected", [
    ("resnet18", ("Conv_0", "kernel"), np.sqrt(2 / (9 * 64))),  # stem, 3->64
    ("resnet18", ("BasicBlock_3", "Conv_0", "kernel"), np.sqrt(2 / (9 * 128))),  # a block conv
    ("resnet18", ("BasicBlock_2", "shortcut_conv", "kernel"), np.sqrt(2 / 128)),  # 1x1 shortcut
    ("resnet18", ("Dense_0", "kernel"), 1 / np.sqrt(3 * 512)),
    ("resnet18", ("Dense_0", "bias"), 1 / np.sqrt(3 * 512)),
    ("mobilenetv2", ("Conv_0", "kernel"), np.sqrt(2 / (9 * 32))),  # stem
    ("mobilenetv2", ("InvertedResidual_1", "Conv_0", "kernel"), np.sqrt(2 / 96)),  # 1x1 expansion
    ("mobilenetv2", ("InvertedResidual_1", "Conv_1", "kernel"), np.sqrt(2 / (9 * 96))),  # depthwise
    ("mobilenetv2", ("Dense_0", "kernel"), 0.01),
    ("vgg16_tiny", ("Conv_1", "kernel"), np.sqrt(2 / (9 * 64))),
    ("vgg16_tiny", ("Dense_0", "kernel"), 0.01),
    ("vgg16_tiny", ("Dense_2", "kernel"), 0.01),
    ("vgg19", ("Conv_1", "kernel"), np.sqrt(2 / (9 * 64))),  # CIFAR VGG: fan_in (64 in, 64 out)
    ("vgg19", ("Conv_0", "kernel"), np.sqrt(2 / (9 * 3))),  # fan_in of the first conv is 27
])
@INITIAL_PARAMS
def test_initial_weight_std_matches_the_authors(name, path, expected):
    assert _kernel_std(name, (64, 64, 3) if name != "vgg19" else (32, 32, 3), path) == pytest.approx(expected, rel=0.1)


@INITIAL_PARAMS
def test_zero_and_uniform_biases():
    resnet = _initial_params("resnet18", (64, 64, 3), 200)
    bias = np.asarray(resnet["Dense_0"]["bias"])
    assert np.abs(bias).max() <= 1 / np.sqrt(512) and np.abs(bias).max() > 0.8 / np.sqrt(512)
    mobilenet = _initial_params("mobilenetv2", (64, 64, 3), 200)
    assert np.all(np.asarray(mobilenet["Dense_0"]["bias"]) == 0)


def test_mobilenetv2_stem_stride_2_leaves_a_2x2_map_at_64px():
    def final_map(**options):
        # Shapes only: traced, never compiled (an eager apply compiled ~300 programs, 13 s).
        model = models.get("mobilenetv2", 200, **options)

        def intermediates():
            variables = model.init({"params": jax.random.key(0)}, jnp.zeros((1, 64, 64, 3)), train=False)
            return model.apply(variables, jnp.zeros((1, 64, 64, 3)), capture_intermediates=True,
                               mutable=["intermediates"])[1]
        return jax.eval_shape(intermediates)["intermediates"]["Conv_1"]["__call__"][0].shape  # the last 1x1 conv
    assert final_map() == (1, 2, 2, 1280)
    assert final_map(stem_strides=1) == (1, 4, 4, 1280)
