"""Student widths from a pruned teacher's masks (PAPER.md, "Student widths").

All rules keep the teacher's depth and return plain Python ints, computed outside `jit`, to pass
as `pdjax.models.get(model_name, num_classes, widths=...)`.

VGG (`vgg11` ... `vgg19_dbl`, `vgg16_tiny`):
  - `rule="chain"`: the paper's rule. With r_i the remaining weights of teacher conv i and
    c_0 = 3 input channels, c_i = round(r_i / (k_i * c_(i-1))), k_i = 9 for 3x3 kernels, c_(i-1)
    the student's own previous width. The classifier is dense; its sparsity is ignored.
    vgg16_tiny's two hidden head layers continue the chain (h_j = round(r_j / h_(j-1)), h_0 the
    student's flattened feature size), under either rule.
  - `rule="balanced"`: the chain rule matches each layer's count exactly in turn, so a narrow
    layer makes the next one wide and widths can oscillate. The balanced rule solves for all
    widths jointly: least squares on log widths, s_i = log(c_i / t_i) (t_i the teacher's width),
    of the equations s_(i-1) + s_i = log(density_i), plus a smoothness term
    `smoothness * (s_i - s_(i-1))^2`; then one common factor makes the student's conv weights
    add up to the teacher's remaining conv weights.
ResNet (`resnet18`, `resnet50`; one width per stage, since residual additions force equal widths
inside a stage) and MobileNetV2 (stem, one width per inverted-residual group, last layer):
  - `rule="chain"` (the only rule): stage by stage, the width whose dense weight count (given the
    student's previous width) is closest to the teacher's remaining weights in that stage, as the
    VGG rule does layer by layer. The stem of a ResNet keeps its width, so the difference between
    its dense and remaining weights is charged to the first stage; the classifier is dense, so its
    remaining weights are added to the budget of the last stage (ResNet) or last layer
    (MobileNetV2). The student's prunable weights then match the teacher's remaining weights
    to within rounding.
Any model: the chain rule is one function, `chain_widths`, over the model's width groups (which
kernels each width sizes, declared with the model: `pdjax.models.width_groups`); it counts
weights from the built model's parameter shapes (`jax.eval_shape`), so a user's own network
gets widths from its masks by giving a builder and its groups.
  - `rule="uniform"` (any model; a baseline, not the paper's): every teacher width times one
    common factor, chosen so that the student has as many prunable (conv + linear) weights as
    the chain rule's student from the same masks. It asks whether the per-layer widths the
    sparsity gives matter, or only the student's size (`uniform_widths`).
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pdjax import masks as masks_lib
from pdjax import models
from pdjax.masks import MaskError
from pdjax.sparsity import layer_stats, natural_key
from pdjax.types import Masks, Widths

RULES = ("chain", "balanced", "uniform")


def _kernels(masks: Masks) -> dict[str, tuple[tuple[int, ...], int]]:
    """path -> (shape, remaining) for every prunable kernel."""
    return {s.path: (s.shape, s.remaining) for s in layer_stats(masks)}


def _top_level(path: str) -> str:
    return path.split("/", 1)[0]


def _index(name: str) -> int:
    return int(name.rsplit("_", 1)[1])


def _is_vgg(model_name: str) -> bool:
    return model_name in models.VGG_PLANS or model_name == "vgg16_tiny"


def kernel_shapes(model: Any, image_shape: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """path -> shape of every prunable kernel of `model` for images of `image_shape` (shapes
    only: `jax.eval_shape`, no arrays)."""
    x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    params = jax.eval_shape(lambda x: model.init({"params": jax.random.key(0)}, x, train=False), x)["params"]
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        names = tuple(str(getattr(k, "key", k)) for k in path)
        if models.is_prunable(names, leaf):
            out["/".join(names)] = tuple(int(d) for d in leaf.shape)
    return out


def affine_kernel_shapes(build: Callable[[tuple[int, ...]], Any], n: int, image_shape: Sequence[int]
                          ) -> Callable[[Sequence[int]], dict[str, tuple[int, ...]]]:
    """Kernel shapes as a function of the widths, from n + 1 traces: every dimension of a kernel
    is an affine function of the widths (a channel count, a multiple of one, or a constant), read
    off at base widths and at each width plus one. Base widths are large and distinct, so that no
    width equals a fixed one by chance (a kernel present only when two widths differ is there)."""
    base = [1000 + 10 * j for j in range(n)]
    at_base = kernel_shapes(build(tuple(base)), image_shape)
    slopes = []
    for j in range(n):
        bumped = kernel_shapes(build(tuple(base[:j] + [base[j] + 1] + base[j + 1:])), image_shape)
        slopes.append({path: tuple(b - a for a, b in zip(at_base[path], bumped[path])) for path in at_base})

    def shapes(widths: Sequence[int]) -> dict[str, tuple[int, ...]]:
        return {path: tuple(d + sum(slopes[j][path][k] * (widths[j] - base[j]) for j in range(n))
                            for k, d in enumerate(dims))
                for path, dims in at_base.items()}

    return shapes


def _check_teacher(build: Callable[[tuple[int, ...]], Any], shapes_at: Callable, masked: dict[str, tuple[int, ...]],
                   n: int, image_shape: Sequence[int], name: str) -> tuple[int, ...]:
    """The teacher's widths, solved from its masks' kernel shapes (they are affine in the widths),
    and the teacher built at them: the masks must have exactly its kernels and shapes.

    Raises:
      MaskError: naming the first kernel that differs.
    """
    at_ones = shapes_at([1] * n)
    bumped = [shapes_at([2 if j == i else 1 for j in range(n)]) for i in range(n)]
    rows, rhs = [], []
    for path, shape in masked.items():
        if path in at_ones and len(at_ones[path]) == len(shape):
            for k, d in enumerate(shape):
                e = [float(bumped[j][path][k] - at_ones[path][k]) for j in range(n)]
                rows.append(e)
                rhs.append(d - at_ones[path][k] + sum(e))
    widths = tuple(max(1, int(round(v))) for v in np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]) \
        if rows else (1,) * n
    built = kernel_shapes(build(widths), image_shape)
    for path in sorted(set(built) | set(masked), key=natural_key):
        if path not in masked:
            raise MaskError(f"masks do not belong to {name}: missing {path}")
        if path not in built:
            raise MaskError(f"masks do not belong to {name}: unexpected {path}")
        if built[path] != masked[path]:
            raise MaskError(f"masks do not belong to {name}: {path} is {masked[path]} in the masks, "
                            f"{built[path]} in {name} at the widths {widths} that fit them best")
    return widths


def chain_widths(build: Callable[[tuple[int, ...]], Any], groups: Sequence[Sequence[str]], masks: Masks, *,
                 image_shape: Sequence[int] = (32, 32, 3), name: str = "the model",
                 shapes: Callable[[Sequence[int]], dict[str, tuple[int, ...]]] | None = None) -> tuple[int, ...]:
    """The chain rule for any model: widths, group by group, whose dense weights match the
    pruned teacher's remaining weights.

    Width i is the integer whose group's dense weight count (given the widths already chosen
    before it) is closest to the remaining weights of that group's kernels in `masks`. Counts
    come from the built model's parameter shapes (`jax.eval_shape`, n + 2 traces for n widths:
    each kernel dimension is affine in the widths); a group's count is then a polynomial of
    degree <= 2 in its width, solved exactly and checked at the two integers around the solution.

    Args:
      build: widths -> a Flax module of the student's architecture (the teacher's, narrower).
      groups: per width, regular expressions (full match) over kernel paths ('Conv_3/kernel')
        of the kernels that width sizes; see `pdjax.models.width_groups`. A kernel's shape may
        depend on its group's width and earlier ones, never on later ones.
      masks: the pruned teacher's masks.
      image_shape: the input images' shape (H, W, C); it sizes a classifier after a flatten.
      name: the architecture's name, for messages.
      shapes: the kernel shapes as a function of the widths, if already known (what
        `affine_kernel_shapes(build, len(groups), image_shape)` returns; it does not depend on
        the masks, so repeated calls for one architecture can share it).

    Raises:
      MaskError: the masks do not have the model's kernels, or a kernel is in two groups.
    """
    return _chain_and_teacher(build, groups, masks, image_shape, name, shapes)[0]


def _chain_and_teacher(build: Callable[[tuple[int, ...]], Any], groups: Sequence[Sequence[str]], masks: Masks,
                       image_shape: Sequence[int], name: str,
                       shapes: Callable[[Sequence[int]], dict[str, tuple[int, ...]]] | None
                       ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """`chain_widths`, and the teacher's widths it solves from the masks on the way."""
    stats = layer_stats(masks)
    kernels = {s.path: s.remaining for s in stats}
    n = len(groups)
    shapes_at = shapes if shapes is not None else affine_kernel_shapes(build, n, image_shape)
    teacher = _check_teacher(build, shapes_at, {s.path: tuple(s.shape) for s in stats}, n, image_shape, name)
    members = [[path for path in shapes_at([1] * n) if any(re.fullmatch(p, path) for p in patterns)]
               for patterns in groups]
    owner: dict[str, int] = {}
    for i, paths in enumerate(members):
        for path in paths:
            if path in owner:
                raise MaskError(f"{path} is in width groups {owner[path]} and {i} of {name}")
            owner[path] = i
    widths = [1] * n
    for i, paths in enumerate(members):
        budget = sum(kernels.get(path, 0) for path in paths)

        def count(w: int, i: int = i, paths: list[str] = paths) -> int:
            shapes = shapes_at(widths[:i] + [w] + widths[i + 1:])
            return sum(math.prod(shapes[path]) for path in paths)

        counts = {1: count(1), 2: count(2), 3: count(3)}
        a = (counts[3] - 2 * counts[2] + counts[1]) / 2
        b = counts[2] - counts[1] - 3 * a
        c = counts[1] - a - b
        if a > 0:
            root = (-b + math.sqrt(max(b * b - 4 * a * (c - budget), 0.0))) / (2 * a)
        else:
            root = (budget - c) / b if b > 0 else 1.0
        candidates = sorted({max(1, math.floor(root)), max(1, math.ceil(root))})
        for w in candidates:
            counts.setdefault(w, count(w))
        # Closest count; a tie goes to the even width, as Python's round does for the paper's rule.
        widths[i] = min(candidates, key=lambda w: (abs(counts[w] - budget), w % 2))
    real = kernel_shapes(build(tuple(widths)), image_shape)
    predicted = shapes_at(widths)
    wrong = [p for p in real if real[p] != predicted.get(p, real[p])]
    if wrong:
        raise ValueError(f"{name}: the shape of {wrong[0]} is not an affine function of the widths "
                         f"({real[wrong[0]]} built, {predicted[wrong[0]]} predicted); chain_widths cannot size it")
    return tuple(widths), teacher


def _count(shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(math.prod(shape) for shape in shapes.values())


def uniform_widths(teacher_widths: Sequence[int], target: int,
                   shapes: Callable[[Sequence[int]], dict[str, tuple[int, ...]]]) -> tuple[int, ...]:
    """The teacher's widths times one factor f (each rounded, never below 1), f chosen so that
    the model's prunable weights come closest to `target`.

    Args:
      teacher_widths: the widths to scale.
      target: the number of prunable (conv + linear kernel) weights to match.
      shapes: the kernel shapes as a function of the widths (`affine_kernel_shapes`).
    """
    teacher = np.asarray(teacher_widths, float)

    def widths_at(factor: float) -> tuple[int, ...]:
        return tuple(max(1, int(round(w * factor))) for w in teacher)

    lo, hi = 0.0, 1.0
    while _count(shapes(widths_at(hi))) < target and hi < 1e6:
        hi *= 2
    for _ in range(60):  # the count grows with the factor: bisect to the step where it crosses
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _count(shapes(widths_at(mid))) < target else (lo, mid)
    return min((widths_at(lo), widths_at(hi)), key=lambda ws: abs(_count(shapes(ws)) - target))


def _num_classes(kernels: dict[str, Any]) -> int:
    """The classifier's outputs: the last top-level Dense kernel of a pdjax model."""
    dense = sorted((p for p in kernels if re.fullmatch(r"Dense_\d+/kernel", p)), key=natural_key)
    if not dense:
        raise MaskError("masks have no top-level Dense_<i>/kernel (the classifier)")
    return int(kernels[dense[-1]][0][-1])


def student_widths(model_name: str, masks: Masks, rule: str = "chain", *,
                   smoothness: float = 1.0, image_shape: Sequence[int] = (32, 32, 3),
                   **options: Any) -> tuple[int, ...]:
    """Widths of a student with the teacher's depth, sized from the teacher's remaining weights.

    Args:
      model_name: the teacher's (and student's) architecture, e.g. "vgg19", "resnet18".
      masks: the pruned teacher's mask tree.
      rule: "chain" (the paper's, any model: `chain_widths` over `pdjax.models.width_groups`),
        "balanced" (VGG only) or "uniform" (any model: the teacher's widths scaled to the chain
        student's size); see the module docstring.
      smoothness: weight of the smoothness term of the balanced rule.
      image_shape: the teacher's input images (H, W, C); vgg16_tiny's head depends on it.
      **options: the teacher's model options (e.g. `stem_width=4` for a ResNet).

    Returns:
      The widths, each >= 1.

    Raises:
      MaskError: the masks do not belong to a `model_name` network.
    """
    if rule not in RULES:
        raise ValueError(f"unknown width rule {rule!r}; known: {', '.join(RULES)}")
    if model_name not in models.NAMES:
        raise ValueError(f"unknown model {model_name!r}; known: {', '.join(models.NAMES)}")
    if rule == "balanced":
        if not _is_vgg(model_name):
            raise ValueError(f"rule {rule!r} is defined for VGG models; {model_name} takes rule='chain'")
        kernels = _kernels(masks)
        convs = _vgg_convs(model_name, kernels)
        widths = _vgg_balanced(convs, smoothness)
        if model_name == "vgg16_tiny":
            widths += _vgg_head(kernels, convs, widths[-1])
        return widths
    num_classes = _num_classes(_kernels(masks))
    key = (model_name, num_classes, tuple(image_shape), tuple(sorted(options.items())))
    shapes = _model_shapes(*key)
    chain, teacher = _chain_and_teacher(_builder(*key), models.width_groups(model_name), masks, image_shape,
                                        model_name, shapes)
    return chain if rule == "chain" else uniform_widths(teacher, _count(shapes(chain)), shapes)


@functools.lru_cache(maxsize=None)
def _builder(model_name: str, num_classes: int, image_shape: tuple, options: tuple) -> Callable:
    return lambda widths: models.get(model_name, num_classes, widths=widths, **dict(options))


@functools.lru_cache(maxsize=32)
def _model_shapes(model_name: str, num_classes: int, image_shape: tuple, options: tuple) -> Callable:
    """A pdjax model's kernel shapes as a function of its widths (traced once per model)."""
    return affine_kernel_shapes(_builder(model_name, num_classes, image_shape, options),
                                len(models.width_groups(model_name)), image_shape)


# ----------------------------------------------------------------------------- VGG


def _vgg_convs(model_name: str, kernels: dict) -> list[tuple[tuple[int, ...], int]]:
    plan = models.VGG16_TINY_PLAN if model_name == "vgg16_tiny" else models.VGG_PLANS[model_name]
    expected = len(models.conv_widths(plan))
    convs = sorted((p for p in kernels if re.fullmatch(r"Conv_\d+/kernel", p)), key=natural_key)
    if len(convs) != expected or [_index(_top_level(p)) for p in convs] != list(range(expected)):
        raise MaskError(f"masks do not belong to {model_name}: expected Conv_0 ... Conv_{expected - 1}, "
                        f"found {len(convs)} convolution kernels")
    out = [kernels[p] for p in convs]
    for i in range(1, len(out)):
        if out[i][0][2] != out[i - 1][0][3]:
            raise MaskError(f"masks do not belong to {model_name}: Conv_{i}/kernel takes "
                            f"{out[i][0][2]} channels but Conv_{i - 1} gives {out[i - 1][0][3]}")
    return out


def _vgg_head(kernels: dict, convs: list, last_width: int) -> tuple[int, ...]:
    """The MLP head of vgg16_tiny, chained like the convolutions: h_j = round(r_j / h_(j-1)),
    where h_0 is the student's flattened feature size; the classifier stays dense."""
    dense = sorted((p for p in kernels if re.fullmatch(r"Dense_\d+/kernel", p)), key=natural_key)
    if len(dense) != 3:
        raise MaskError(f"masks do not belong to vgg16_tiny: expected Dense_0 ... Dense_2, found {len(dense)}")
    positions = kernels[dense[0]][0][0] // convs[-1][0][3]  # flattened pixels after the last pool
    previous = positions * last_width
    out = []
    for path in dense[:-1]:
        previous = max(1, round(kernels[path][1] / previous))
        out.append(previous)
    return tuple(out)


def _vgg_balanced(convs: list, smoothness: float) -> tuple[int, ...]:
    n = len(convs)
    c0 = convs[0][0][2]
    teacher = np.array([s[3] for s, _ in convs], float)
    fan = np.array([s[0] * s[1] for s, _ in convs], float)
    remaining = np.array([max(r, 1) for _, r in convs], float)
    teacher_in = np.concatenate([[c0], teacher[:-1]])
    log_density = np.log(remaining / (fan * teacher_in * teacher))
    rows, rhs = [], []
    for i in range(n):  # s_(i-1) + s_i = log density_i, with s_0 (the image) fixed at 0
        row = np.zeros(n)
        row[i] = 1.0
        if i > 0:
            row[i - 1] = 1.0
        rows.append(row)
        rhs.append(log_density[i])
    w = math.sqrt(smoothness)
    for i in range(1, n):
        row = np.zeros(n)
        row[i], row[i - 1] = w, -w
        rows.append(row)
        rhs.append(0.0)
    s = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    target = remaining.sum()

    def widths_at(log_scale: float) -> np.ndarray:
        return np.maximum(1, np.round(teacher * np.exp(s + log_scale))).astype(int)

    def count(widths: np.ndarray) -> float:
        return float(np.sum(fan * np.concatenate([[c0], widths[:-1]]) * widths))

    lo, hi = -5.0, 5.0  # one common factor so that the totals match
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if count(widths_at(mid)) < target else (lo, mid)
    best = min((widths_at(lo), widths_at(hi)), key=lambda ws: abs(count(ws) - target))
    return tuple(int(v) for v in best)


# ----------------------------------------------------------------------------- reports


def prunable_count(model_name: str, num_classes: int, widths: Widths,
                   image_shape: tuple[int, int, int] = (32, 32, 3), **options: Any) -> int:
    """Conv + linear kernel weights of `model_name` at `widths` (shapes only, no arrays);
    `options` go to `pdjax.models.get` (e.g. `stem_width=4`)."""
    model = models.get(model_name, num_classes, widths=widths, **options)
    params = jax.eval_shape(lambda: models.init(model, jax.random.key(0), image_shape))["params"]
    return models.count_params(params, prunable_only=True)


def compare_rules(model_name: str, masks: Masks, num_classes: int,
                  image_shape: tuple[int, int, int] = (32, 32, 3), **options: Any) -> list[dict]:
    """Each applicable rule's widths and prunable weights beside the teacher's remaining weights
    (`options`: the teacher's model options, as in `student_widths`)."""
    remaining = masks_lib.remaining(masks)
    rules = RULES if _is_vgg(model_name) else ("chain", "uniform")
    out = []
    for rule in rules:
        widths = student_widths(model_name, masks, rule, image_shape=image_shape, **options)
        count = prunable_count(model_name, num_classes, widths, image_shape, **options)
        out.append({"rule": rule, "widths": list(widths), "student_weights": count,
                    "teacher_remaining": remaining, "ratio": count / remaining})
    return out
