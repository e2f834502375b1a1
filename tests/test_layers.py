"""pdjax.layers: the convolution, padding and pooling the models are built from, against
JAX's and Flax's own (and PyTorch's padding)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pdjax import layers


@pytest.mark.parametrize("hw, k", [(2, 3), (4, 3), (1, 3), (5, 1)])
def test_conv_as_matmul_equals_lax_conv(hw, k):
    x = jax.random.normal(jax.random.key(0), (3, hw, hw, 5))
    kernel = jax.random.normal(jax.random.key(1), (k, k, 5, 6))
    p = (k - 1) // 2
    expected = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((p, p), (p, p)),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(layers.conv_as_matmul(x, kernel, (p, p)), expected, rtol=1e-5, atol=1e-5)


def test_stride2_padding_is_pytorch_symmetric():
    # PyTorch pads 1 on each side for a 3x3 stride-2 conv; the output's first pixel sees the
    # top-left 2x2 of the input at kernel offset (1, 1).
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    conv = layers.Conv(1, (3, 3), strides=2, use_bias=False)
    kernel = jnp.zeros((3, 3, 1, 1)).at[1, 1].set(1.0)
    y = conv.apply({"params": {"kernel": kernel}}, x)
    np.testing.assert_array_equal(y[0, :, :, 0], [[0.0, 2.0], [8.0, 10.0]])


@pytest.mark.parametrize("shape", [(2, 6, 6, 3), (2, 5, 7, 3)])
def test_max_pool_matches_flax_values_and_gradients_with_ties(shape):
    import flax.linen as nn
    # Small integers make ties in most windows; the gradient must go to the first maximum.
    x = jnp.asarray(np.random.default_rng(0).integers(0, 3, shape).astype(np.float32))
    reference = lambda v: nn.max_pool(v, (2, 2), strides=(2, 2))
    g = jnp.asarray(np.random.default_rng(1).normal(size=reference(x).shape).astype(np.float32))
    np.testing.assert_array_equal(layers.max_pool_2x2(x), reference(x))
    np.testing.assert_array_equal(jax.vjp(layers.max_pool_2x2, x)[1](g)[0], jax.vjp(reference, x)[1](g)[0])
