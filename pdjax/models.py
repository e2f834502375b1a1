"""Models of the paper as pure Flax Linen modules, buildable at any channel widths.

Usage:
    model = pdjax.models.get("vgg19", num_classes=100)
    variables = pdjax.models.init(model, jax.random.key(0), (32, 32, 3))
    logits = model.apply(variables, images, train=False)

`widths` overrides a model's channel widths, because students derived from a pruned teacher
keep the teacher's depth with fewer channels:
  - CIFAR VGGs (`vgg11`, `vgg13`, `vgg16`, `vgg19`, `vgg19_dbl`): one width per convolution, in
    order (pools stay where the plan has them).
  - `vgg16_tiny`: its 13 convolution widths, then the 2 hidden widths of its MLP head.
  - `resnet18`, `resnet50`: one width per stage (4 numbers); the stem stays 64 wide.
  - `mobilenetv2`: the stem, the 7 inverted-residual groups and the last 1x1 layer (9 numbers);
    blocks of a group share a width because residual additions demand it.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

from pdjax import compilation
from pdjax.layers import (Conv, Dense, batch_norm, he_normal, he_normal_fan_out, max_pool_2x2, small_normal,
                          torch_linear_bias, torch_linear_kernel)
from pdjax.types import PRNGKey, Variables, Widths

M = "M"  # a 2x2 max-pool in a VGG plan

VGG_PLANS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512),
    "vgg13": (64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512),
    "vgg16": (64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512),
    "vgg19": (64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M,
              512, 512, 512, 512),
    "vgg19_dbl": (64, 128, M, 256, 256, M, 512, 512, 512, 512, M, 1024, 1024, 1024, 1024, M,
                  1024, 1024, 1024, 512),
}
# Tiny-ImageNet VGG16: plan D with a fifth pool, and an MLP head.
VGG16_TINY_PLAN = VGG_PLANS["vgg16"] + (M,)
VGG16_TINY_HEAD = (1024, 1024)
RESNET_STAGE_WIDTHS = (64, 128, 256, 512)
# (expansion t, output channels c, repeats n, first stride s) of MobileNetV2's groups.
MOBILENETV2_GROUPS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                      (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
MOBILENETV2_WIDTHS = (32,) + tuple(g[1] for g in MOBILENETV2_GROUPS) + (1280,)


def conv_widths(plan: Sequence[int | str]) -> tuple[int, ...]:
    """The convolution widths of a VGG plan, pools left out."""
    return tuple(int(v) for v in plan if v != M)


def with_widths(plan: Sequence[int | str], widths: Widths) -> tuple[int | str, ...]:
    """A VGG plan with its convolution widths replaced, pools kept in place."""
    widths = list(widths)
    if len(widths) != len(conv_widths(plan)):
        raise ValueError(f"plan has {len(conv_widths(plan))} convolutions, got {len(widths)} widths")
    out: list[int | str] = []
    for v in plan:
        out.append(M if v == M else widths.pop(0))
    return tuple(out)


class VGG(nn.Module):
    """CIFAR VGG (OpenLTH style): [Conv3x3 -> BN -> ReLU | MaxPool2], AvgPool2, Linear.

    With `head` set (Tiny-ImageNet VGG16), the classifier is an MLP with ReLU and dropout.
    `conv_init` and `dense_init` initialise the conv and linear kernels (PAPER.md: He-normal
    with fan_in for the CIFAR VGGs; fan_out convs and normal(0, 0.01) linears for VGG16).
    """

    plan: tuple[int | str, ...]
    num_classes: int
    head: tuple[int, ...] = ()
    dropout: float = 0.5
    dtype: Any = None
    conv_init: nn.initializers.Initializer = he_normal
    dense_init: nn.initializers.Initializer = he_normal

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for v in self.plan:
            if v == M:
                x = max_pool_2x2(x)
            else:
                x = Conv(int(v), (3, 3), dtype=self.dtype, kernel_init=self.conv_init)(x)
                x = nn.relu(batch_norm(train, dtype=self.dtype)(x))
        if not self.head:
            # The map is 2x2 here on 32x32 inputs: average it to one vector.
            x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))  # by keyword: jax2onnx patches it so
        x = x.reshape(x.shape[0], -1)
        for width in self.head:
            x = nn.relu(Dense(width, dtype=self.dtype, kernel_init=self.dense_init)(x))
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return Dense(self.num_classes, dtype=self.dtype, kernel_init=self.dense_init)(x)


# The convolutions of the authors' ResNets and MobileNetV2: no bias, He-normal with fan_out.
FanOutConv = functools.partial(Conv, use_bias=False, kernel_init=he_normal_fan_out)


class ShortcutScale(nn.Module):
    """The authors' identity shortcut: a learnable per-channel scale, initialised to 1."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return x * self.param("scale", nn.initializers.ones_init(), (x.shape[-1],)).astype(x.dtype)


class BasicBlock(nn.Module):
    features: int
    strides: int = 1
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = FanOutConv(self.features, (3, 3), self.strides, dtype=self.dtype)(x)
        y = nn.relu(batch_norm(train, dtype=self.dtype)(y))
        y = FanOutConv(self.features, (3, 3), dtype=self.dtype)(y)
        y = batch_norm(train, dtype=self.dtype)(y)
        if self.strides != 1 or x.shape[-1] != self.features:
            x = FanOutConv(self.features, (1, 1), self.strides, name="shortcut_conv", dtype=self.dtype)(x)
            x = batch_norm(train, name="shortcut_bn", dtype=self.dtype)(x)
        else:
            x = ShortcutScale(name="shortcut_scale")(x)
        return nn.relu(x + y)


class Bottleneck(nn.Module):
    features: int
    strides: int = 1
    expansion: int = 4
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        out = self.features * self.expansion
        y = nn.relu(batch_norm(train, dtype=self.dtype)(FanOutConv(self.features, (1, 1), dtype=self.dtype)(x)))
        y = FanOutConv(self.features, (3, 3), self.strides, dtype=self.dtype)(y)
        y = nn.relu(batch_norm(train, dtype=self.dtype)(y))
        y = batch_norm(train, dtype=self.dtype)(FanOutConv(out, (1, 1), dtype=self.dtype)(y))
        if self.strides != 1 or x.shape[-1] != out:
            x = FanOutConv(out, (1, 1), self.strides, name="shortcut_conv", dtype=self.dtype)(x)
            x = batch_norm(train, name="shortcut_bn", dtype=self.dtype)(x)
        else:
            x = ShortcutScale(name="shortcut_scale")(x)
        return nn.relu(x + y)


class ResNet(nn.Module):
    """Tiny-ImageNet ResNet: Conv3x3 stem (stride 1, no max-pool), 4 stages, GAP, Linear."""

    block: Callable[..., nn.Module]
    stage_sizes: tuple[int, ...]
    stage_widths: tuple[int, ...]
    num_classes: int
    stem_width: int = 64
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = FanOutConv(self.stem_width, (3, 3), dtype=self.dtype)(x)
        x = nn.relu(batch_norm(train, dtype=self.dtype)(x))
        for i, (blocks, width) in enumerate(zip(self.stage_sizes, self.stage_widths)):
            for j in range(blocks):
                x = self.block(width, strides=2 if i > 0 and j == 0 else 1, dtype=self.dtype)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        # The classifier keeps PyTorch's nn.Linear default initialisation (PAPER.md).
        return Dense(self.num_classes, dtype=self.dtype, kernel_init=torch_linear_kernel,
                     bias_init=torch_linear_bias(x.shape[-1]))(x)


class InvertedResidual(nn.Module):
    features: int
    expansion: int
    strides: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        cin = x.shape[-1]
        hidden = cin * self.expansion
        y = x
        if self.expansion != 1:
            y = nn.relu6(batch_norm(train, dtype=self.dtype)(FanOutConv(hidden, (1, 1), dtype=self.dtype)(y)))
        y = FanOutConv(hidden, (3, 3), self.strides, groups=hidden, dtype=self.dtype)(y)
        y = nn.relu6(batch_norm(train, dtype=self.dtype)(y))
        y = batch_norm(train, dtype=self.dtype)(FanOutConv(self.features, (1, 1), dtype=self.dtype)(y))
        if self.strides == 1 and cin == self.features:
            y = x + y
        return y


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0, ReLU6, last layer 1280, dropout 0.2), torchvision's design.

    `stem_strides` is 2, as in the authors' code, also at 64x64 (Tiny-ImageNet): the final map
    is then 2x2 (1x1 at 32x32). `stem_strides=1` keeps twice the resolution in every layer:
    the same weights (student widths do not change) but about 4x the FLOPs per image (about
    203 instead of 51 MFLOPs at 64x64, 200 classes) and a 4x4 final map at 64x64, i.e. a
    bigger network than the paper's.
    """

    widths: tuple[int, ...]
    num_classes: int
    stem_strides: int = 2
    dropout: float = 0.2
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        stem, *groups, last = self.widths
        x = FanOutConv(stem, (3, 3), self.stem_strides, dtype=self.dtype)(x)
        x = nn.relu6(batch_norm(train, dtype=self.dtype)(x))
        for (t, _, n, s), width in zip(MOBILENETV2_GROUPS, groups):
            for j in range(n):
                x = InvertedResidual(width, t, s if j == 0 else 1, dtype=self.dtype)(x, train)
        x = nn.relu6(batch_norm(train, dtype=self.dtype)(FanOutConv(last, (1, 1), dtype=self.dtype)(x)))
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return Dense(self.num_classes, dtype=self.dtype, kernel_init=small_normal)(x)


def _vgg(plan: tuple[int | str, ...]) -> Callable[..., nn.Module]:
    def build(num_classes: int, widths: Widths | None = None, **options: Any) -> nn.Module:
        p = with_widths(plan, widths) if widths is not None else plan
        return VGG(p, num_classes, **options)
    return build


def _vgg16_tiny(num_classes: int, widths: Widths | None = None, **options: Any) -> nn.Module:
    widths = tuple(widths) if widths is not None else default_widths("vgg16_tiny")
    n = len(conv_widths(VGG16_TINY_PLAN))
    if len(widths) != n + len(VGG16_TINY_HEAD):
        raise ValueError(f"vgg16_tiny takes {n} convolution widths and {len(VGG16_TINY_HEAD)} head "
                         f"widths, got {len(widths)} widths")
    options = {"conv_init": he_normal_fan_out, "dense_init": small_normal, **options}
    return VGG(with_widths(VGG16_TINY_PLAN, widths[:n]), num_classes, head=widths[n:], **options)


def _resnet(block: Callable[..., nn.Module], sizes: tuple[int, ...]) -> Callable[..., nn.Module]:
    def build(num_classes: int, widths: Widths | None = None, **options: Any) -> nn.Module:
        stage_widths = tuple(widths) if widths is not None else RESNET_STAGE_WIDTHS
        if len(stage_widths) != len(sizes):
            raise ValueError(f"a ResNet takes {len(sizes)} stage widths, got {len(stage_widths)}")
        return ResNet(block, sizes, stage_widths, num_classes, **options)
    return build


def _mobilenetv2(num_classes: int, widths: Widths | None = None, **options: Any) -> nn.Module:
    w = tuple(widths) if widths is not None else MOBILENETV2_WIDTHS
    if len(w) != len(MOBILENETV2_WIDTHS):
        raise ValueError(f"MobileNetV2 takes {len(MOBILENETV2_WIDTHS)} widths "
                         f"(stem, 7 groups, last), got {len(w)}")
    return MobileNetV2(w, num_classes, **options)


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    **{name: _vgg(plan) for name, plan in VGG_PLANS.items()},
    "vgg16_tiny": _vgg16_tiny,
    "resnet18": _resnet(BasicBlock, (2, 2, 2, 2)),
    "resnet50": _resnet(Bottleneck, (3, 4, 6, 3)),
    "mobilenetv2": _mobilenetv2,
}
NAMES = tuple(_BUILDERS)


def default_widths(name: str) -> tuple[int, ...]:
    """The full-size widths of a model, in the form `get(..., widths=...)` takes."""
    if name in VGG_PLANS:
        return conv_widths(VGG_PLANS[name])
    if name == "vgg16_tiny":
        return conv_widths(VGG16_TINY_PLAN) + VGG16_TINY_HEAD
    if name in ("resnet18", "resnet50"):
        return RESNET_STAGE_WIDTHS
    if name == "mobilenetv2":
        return MOBILENETV2_WIDTHS
    raise ValueError(f"unknown model {name!r}; known: {', '.join(NAMES)}")


def width_groups(name: str) -> tuple[tuple[str, ...], ...]:
    """Which prunable kernels each entry of the model's `widths` sizes, for the student-width
    rules of `pdjax.students`: per width, regular expressions over kernel paths
    ('Conv_3/kernel'). A width's budget is the remaining weights of its kernels, and its count
    their dense weights, which may depend on that width and the widths before it, never on later
    ones. A kernel in no group is left out (a VGG's dense classifier, whose sparsity the paper's
    rule ignores).

    - CIFAR VGGs: width i sizes Conv_i; vgg16_tiny's two head widths size Dense_0 and Dense_1.
    - ResNets: a stage's width sizes every kernel of its blocks; the first stage also holds the
      stem (which keeps its own width: its pruned weights are charged to stage 1) and the last
      stage the classifier (dense: its remaining weights join that stage's budget).
    - MobileNetV2: the stem; each group's inverted residuals; the last 1x1 layer with the
      classifier.
    """
    if name in VGG_PLANS:
        return tuple((f"Conv_{i}/kernel",) for i in range(len(conv_widths(VGG_PLANS[name]))))
    if name == "vgg16_tiny":
        n = len(conv_widths(VGG16_TINY_PLAN))
        return tuple((f"Conv_{i}/kernel",) for i in range(n)) + (("Dense_0/kernel",), ("Dense_1/kernel",))
    if name in ("resnet18", "resnet50"):
        block, sizes = ("BasicBlock", (2, 2, 2, 2)) if name == "resnet18" else ("Bottleneck", (3, 4, 6, 3))
        groups, start = [], 0
        for s, n in enumerate(sizes):
            group = tuple(f"{block}_{j}/.*kernel" for j in range(start, start + n))
            groups.append(group + (("Conv_0/kernel",) if s == 0 else ()) + (("Dense_0/kernel",) if s == 3 else ()))
            start += n
        return tuple(groups)
    if name == "mobilenetv2":
        groups, start = [("Conv_0/kernel",)], 0
        for _, _, n, _ in MOBILENETV2_GROUPS:
            groups.append(tuple(f"InvertedResidual_{j}/.*kernel" for j in range(start, start + n)))
            start += n
        return tuple(groups) + (("Conv_1/kernel", "Dense_0/kernel"),)
    raise ValueError(f"unknown model {name!r}; known: {', '.join(NAMES)}")


def scaled_widths(name: str, multiplier: float) -> tuple[int, ...]:
    """The model's widths times `multiplier`, rounded, never below 1."""
    return tuple(max(1, round(w * multiplier)) for w in default_widths(name))


def get(name: str, num_classes: int, widths: Widths | None = None, **options: Any) -> nn.Module:
    """Builds a model by name.

    Args:
      name: one of `pdjax.models.NAMES`.
      num_classes: size of the classifier output.
      widths: channel widths (see the module docstring); None for the paper's widths.
      **options: passed to the module (e.g. `stem_width=32` for a ResNet, `dtype='bfloat16'`
        for mixed precision).

    Returns:
      A Flax module; call it with `model.apply(variables, x, train=...)`.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(NAMES)}")
    if widths is not None:
        widths = tuple(int(w) for w in widths)
        if any(w < 1 for w in widths):
            raise ValueError(f"widths must be >= 1, got {widths}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if options.get("dtype") is not None:
        options["dtype"] = compute_dtype(options["dtype"])
    return _BUILDERS[name](num_classes, widths, **options)


COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


def compute_dtype(name: Any) -> Any:
    """A model's compute dtype from its name ('float32', 'bfloat16', 'float16') or a dtype."""
    if str(jnp.dtype(name) if not isinstance(name, str) else name) not in COMPUTE_DTYPES:
        raise ValueError(f"unknown compute dtype {name!r}; known: {', '.join(COMPUTE_DTYPES)}")
    return jnp.dtype(name)


def init(model: nn.Module, key: PRNGKey, image_shape: Sequence[int]) -> Variables:
    """Initialises a model's variables for images of `image_shape` (H, W, C).

    Returns:
      A dict with `params` and `batch_stats`.
    """
    x = jnp.zeros((1, *image_shape), jnp.float32)

    def _init(key: PRNGKey) -> Variables:
        return model.init({"params": key}, x, train=False)

    variables = dict(compilation.one_off(_init)(key))  # run once: compiled cheaply
    variables.setdefault("batch_stats", {})
    return variables


def is_prunable(path: tuple[str, ...], leaf: Any) -> bool:
    """Whether a parameter is prunable: every conv and linear kernel (PAPER.md)."""
    return path[-1] == "kernel"


def count_params(params: Any, prunable_only: bool = False) -> int:
    """Number of parameters; with `prunable_only`, only conv and linear kernels."""
    total = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        names = tuple(getattr(k, "key", str(k)) for k in path)
        if not prunable_only or is_prunable(names, leaf):
            total += int(leaf.size)
    return total
