"""Layers shared by the pdjax models.

`Conv` stores its kernel in the HWIO layout of `flax.linen.Conv` (parameter names `kernel` and
`bias`), so masks and checkpoints see the same tree whichever form computes it. On small
feature maps XLA:CPU's convolution is far slower than the same product written as a matmul
(a 3x3 conv on a 2x2 map runs at about 2 GFLOP/s there), so on CPU such convolutions are
computed as im2col + matmul; the numbers agree to float tolerance.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

# He-normal (gain sqrt(2)), plain normal, not truncated: PyTorch's kaiming_normal_. The CIFAR
# VGGs use fan_in; the authors' ResNets, Tiny-ImageNet VGG16 and MobileNetV2 use fan_out (for a
# depthwise HWIO kernel (3, 3, 1, C) flax's fan_out is 9 * C, as PyTorch's).
he_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
he_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# Linear layers of the Tiny-ImageNet VGG16 head and of MobileNetV2: normal(0, 0.01).
small_normal = nn.initializers.normal(0.01)
# PyTorch's default nn.Linear weight: uniform in +-1/sqrt(fan_in) (kaiming_uniform with a=sqrt(5)).
torch_linear_kernel = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_linear_bias(fan_in: int) -> nn.initializers.Initializer:
    """PyTorch's default nn.Linear bias: uniform in +-1/sqrt(fan_in)."""
    bound = 1.0 / fan_in ** 0.5

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init

# Feature maps with at most this many pixels (H*W) are convolved as a matmul on CPU.
CPU_MATMUL_CONV_MAX_PIXELS = 4


def batch_norm(train: bool, name: str | None = None, dtype: Any = None) -> nn.BatchNorm:
    """BatchNorm with PyTorch's settings (momentum 0.1 in PyTorch's convention, eps 1e-5).

    With `dtype` (e.g. bfloat16) the output has that type; statistics and parameters stay
    float32."""
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name,
                        dtype=dtype)


def _use_matmul_form(x: jax.Array, kernel_size: tuple[int, int], strides: int, groups: int) -> bool:
    if groups != 1 or strides != 1 or jax.default_backend() != "cpu":
        return False
    return x.shape[1] * x.shape[2] <= CPU_MATMUL_CONV_MAX_PIXELS or kernel_size == (1, 1)


def conv_as_matmul(x: jax.Array, kernel: jax.Array, padding: tuple[int, int]) -> jax.Array:
    """Stride-1 convolution computed as im2col + one matmul (same result as `lax.conv`)."""
    kh, kw, cin, cout = kernel.shape
    ph, pw = padding
    x = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    h = x.shape[1] - kh + 1
    w = x.shape[2] - kw + 1
    patches = [x[:, i : i + h, j : j + w, :] for i in range(kh) for j in range(kw)]
    cols = jnp.concatenate(patches, axis=-1) if len(patches) > 1 else patches[0]
    return cols @ kernel.reshape(kh * kw * cin, cout)


class Conv(nn.Module):
    """2-D convolution with PyTorch-style symmetric padding ((k-1)//2 on each side).

    Attributes:
      features: output channels.
      kernel_size: (height, width) of the kernel.
      strides: stride in both spatial dimensions.
      use_bias: whether to add a bias.
      groups: feature groups (groups == input channels is a depthwise convolution).
      dtype: the computation's dtype (None: the input's); parameters stay float32.
      kernel_init: the kernel's initializer (He-normal with fan_in by default).
    """

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    strides: int = 1
    use_bias: bool = True
    groups: int = 1
    dtype: Any = None
    kernel_init: nn.initializers.Initializer = he_normal

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = self.kernel_size
        cin = x.shape[-1]
        if cin % self.groups:
            raise ValueError(f"{cin} input channels do not split into {self.groups} groups")
        kernel = self.param("kernel", self.kernel_init, (kh, kw, cin // self.groups, self.features))
        padding = ((kh - 1) // 2, (kw - 1) // 2)
        if self.dtype is not None:
            x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        if _use_matmul_form(x, self.kernel_size, self.strides, self.groups):
            y = conv_as_matmul(x, kernel, padding)
        else:
            y = jax.lax.conv_general_dilated(
                x,
                kernel,
                window_strides=(self.strides, self.strides),
                padding=((padding[0], padding[0]), (padding[1], padding[1])),
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                feature_group_count=self.groups,
            )
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,)).astype(y.dtype)
        return y


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max-pool with stride 2 (NHWC); odd sizes drop the last row/column.

    Same values and gradients as `flax.linen.max_pool(x, (2, 2), strides=(2, 2))`: the
    gradient of each window goes to its first maximum (row-major), as in XLA's
    select-and-scatter and PyTorch. Written as elementwise ops on the four window positions,
    because XLA:CPU's select-and-scatter took about 110 ms for a 128x32x32x64 batch.
    """
    return _max_pool_fwd(x)[0]


def _windows(x: jax.Array) -> tuple[jax.Array, ...]:
    b, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2, :].reshape(b, h // 2, 2, w // 2, 2, c)
    return tuple(x[:, :, i, :, j, :] for i in range(2) for j in range(2))


def _max_pool_fwd(x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, tuple[int, ...]]]:
    a, b, c, d = _windows(x)
    return jnp.maximum(jnp.maximum(a, b), jnp.maximum(c, d)), (x, x.shape)


def _max_pool_bwd(res: tuple[jax.Array, tuple[int, ...]], g: jax.Array) -> tuple[jax.Array]:
    x, shape = res
    windows = _windows(x)
    y = jnp.maximum(jnp.maximum(windows[0], windows[1]), jnp.maximum(windows[2], windows[3]))
    taken = jnp.zeros(y.shape, jnp.bool_)
    grads = []
    for v in windows:
        pick = (v == y) & ~taken
        taken = taken | pick
        grads.append(jnp.where(pick, g, jnp.zeros_like(g)))
    b, h, w, c = shape
    dx = jnp.stack([jnp.stack(grads[0:2], axis=3), jnp.stack(grads[2:4], axis=3)], axis=2)
    dx = dx.reshape(b, h - h % 2, w - w % 2, c)
    return (jnp.pad(dx, ((0, 0), (0, h % 2), (0, w % 2), (0, 0))),)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)


class Dense(nn.Dense):
    """`flax.linen.Dense` with He-normal kernels and zero biases (the paper's init)."""

    kernel_init: nn.initializers.Initializer = he_normal
