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
    VGG rule does layer by layer. The stem of a ResNet stays 64 wide, so the difference between
    its dense and remaining weights is charged to the first stage; the classifier is dense, so its
    remaining weights are added to the budget of the last stage (ResNet) or last layer
    (MobileNetV2). The student's prunable weights then match the teacher's remaining weights
    to within rounding.
"""

from __future__ import annotations

import math
import re
from typing import Callable

import jax
import numpy as np

from pdjax import masks as masks_lib
from pdjax import models
from pdjax.masks import MaskError
from pdjax.sparsity import layer_stats, natural_key
from pdjax.types import Masks, Widths

RULES = ("chain", "balanced")


def _kernels(masks: Masks) -> dict[str, tuple[tuple[int, ...], int]]:
    """path -> (shape, remaining) for every prunable kernel."""
    return {s.path: (s.shape, s.remaining) for s in layer_stats(masks)}


def _top_level(path: str) -> str:
    return path.split("/", 1)[0]


def _index(name: str) -> int:
    return int(name.rsplit("_", 1)[1])


def _is_vgg(model_name: str) -> bool:
    return model_name in models.VGG_PLANS or model_name == "vgg16_tiny"


def student_widths(model_name: str, masks: Masks, rule: str = "chain", *,
                   smoothness: float = 1.0) -> tuple[int, ...]:
    """Widths of a student with the teacher's depth, sized from the teacher's remaining weights.

    Args:
      model_name: the teacher's (and student's) architecture, e.g. "vgg19", "resnet18".
      masks: the pruned teacher's mask tree.
      rule: "chain" (the paper's) or "balanced" (VGG only); see the module docstring.
      smoothness: weight of the smoothness term of the balanced rule.

    Returns:
      The widths, each >= 1.

    Raises:
      MaskError: the masks do not belong to a `model_name` network.
    """
    if rule not in RULES:
        raise ValueError(f"unknown width rule {rule!r}; known: {', '.join(RULES)}")
    kernels = _kernels(masks)
    if _is_vgg(model_name):
        convs = _vgg_convs(model_name, kernels)
        widths = _vgg_chain(convs) if rule == "chain" else _vgg_balanced(convs, smoothness)
        if model_name == "vgg16_tiny":
            widths += _vgg_head(kernels, convs, widths[-1])
        return widths
    if rule != "chain":
        raise ValueError(f"rule {rule!r} is defined for VGG models; {model_name} takes rule='chain'")
    if model_name in ("resnet18", "resnet50"):
        return _resnet_chain(model_name, kernels)
    if model_name == "mobilenetv2":
        return _mobilenetv2_chain(kernels)
    raise ValueError(f"unknown model {model_name!r}; known: {', '.join(models.NAMES)}")


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


def _vgg_chain(convs: list) -> tuple[int, ...]:
    widths = []
    previous = convs[0][0][2]  # image channels
    for shape, remaining in convs:
        k = shape[0] * shape[1]
        previous = max(1, round(remaining / (k * previous)))
        widths.append(previous)
    return tuple(widths)


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


# ----------------------------------------------------------------------------- ResNet / MobileNetV2


def _closest_width(count: Callable[[int], float], budget: float, upper: int) -> int:
    """The width in [1, upper] whose count is closest to `budget` (counts grow with width)."""
    best, best_gap = 1, abs(count(1) - budget)
    for w in range(2, upper + 1):
        gap = abs(count(w) - budget)
        if gap < best_gap:
            best, best_gap = w, gap
        elif count(w) > budget:
            break
    return best


def _remaining_under(kernels: dict, prefixes: set[str]) -> int:
    return sum(r for p, (_, r) in kernels.items() if _top_level(p) in prefixes)


def _check_modules(model_name: str, kernels: dict, expected: set[str]) -> None:
    found = {_top_level(p) for p in kernels}
    if found != expected:
        missing = sorted(expected - found, key=natural_key)
        extra = sorted(found - expected, key=natural_key)
        detail = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        raise MaskError(f"masks do not belong to {model_name}: {detail}")


def _resnet_chain(model_name: str, kernels: dict) -> tuple[int, ...]:
    bottleneck = model_name == "resnet50"
    block = "Bottleneck" if bottleneck else "BasicBlock"
    sizes = (3, 4, 6, 3) if bottleneck else (2, 2, 2, 2)
    _check_modules(model_name, kernels,
                   {"Conv_0", "Dense_0"} | {f"{block}_{j}" for j in range(sum(sizes))})
    stem_shape, stem_remaining = kernels["Conv_0/kernel"]
    stem = stem_shape[3]
    fc_shape, fc_remaining = kernels["Dense_0/kernel"]
    classes = fc_shape[1]
    teacher_widths = [kernels[f"{block}_{sum(sizes[:s])}/Conv_0/kernel"][0][3] for s in range(4)]
    widths: list[int] = []
    previous_out, start = stem, 0
    for s, n in enumerate(sizes):
        names = {f"{block}_{j}" for j in range(start, start + n)}
        budget = _remaining_under(kernels, names)
        if s == 0:  # the stem stays dense: charge its dense-minus-remaining to stage 1
            budget -= math.prod(stem_shape) - stem_remaining
        last = s == len(sizes) - 1
        if last:  # the classifier is dense: its remaining weights join the last stage's budget
            budget += fc_remaining
        stride = 1 if s == 0 else 2

        def count(w: int, c_in: int = previous_out, n: int = n, stride: int = stride, last: bool = last) -> float:
            if bottleneck:
                out = 4 * w
                first = c_in * w + 9 * w * w + w * out + (c_in * out if stride != 1 or c_in != out else 0)
                rest = (n - 1) * (out * w + 9 * w * w + w * out)
            else:
                out = w
                first = 9 * c_in * w + 9 * w * w + (c_in * w if stride != 1 or c_in != w else 0)
                rest = (n - 1) * 18 * w * w
            return first + rest + (out * classes if last else 0)

        w = _closest_width(count, budget, 4 * teacher_widths[s])
        widths.append(w)
        previous_out, start = (4 * w if bottleneck else w), start + n
    return tuple(widths)


def _mobilenetv2_chain(kernels: dict) -> tuple[int, ...]:
    repeats = [g[2] for g in models.MOBILENETV2_GROUPS]
    expansions = [g[0] for g in models.MOBILENETV2_GROUPS]
    _check_modules("mobilenetv2", kernels,
                   {"Conv_0", "Conv_1", "Dense_0"} | {f"InvertedResidual_{j}" for j in range(sum(repeats))})
    stem_shape, stem_remaining = kernels["Conv_0/kernel"]
    k_stem = stem_shape[0] * stem_shape[1] * stem_shape[2]
    widths = [max(1, round(stem_remaining / k_stem))]
    start = 0
    for g, (t, n) in enumerate(zip(expansions, repeats)):
        names = {f"InvertedResidual_{j}" for j in range(start, start + n)}
        budget = _remaining_under(kernels, names)
        teacher_out = kernels[f"InvertedResidual_{start}/Conv_{1 if t == 1 else 2}/kernel"][0][3]

        def count(w: int, c_in: int = widths[-1], t: int = t, n: int = n) -> float:
            hidden = t * c_in
            first = (c_in * hidden if t != 1 else 0) + 9 * hidden + hidden * w
            rest = (n - 1) * (w * t * w + 9 * t * w + t * w * w)
            return first + rest

        widths.append(_closest_width(count, budget, 4 * teacher_out))
        start += n
    last_shape, last_remaining = kernels["Conv_1/kernel"]
    fc_shape, fc_remaining = kernels["Dense_0/kernel"]
    # The last 1x1 layer and the dense classifier share one budget.
    widths.append(max(1, round((last_remaining + fc_remaining) / (widths[-1] + fc_shape[1]))))
    return tuple(widths)


# ----------------------------------------------------------------------------- reports


def prunable_count(model_name: str, num_classes: int, widths: Widths,
                   image_shape: tuple[int, int, int] = (32, 32, 3)) -> int:
    """Conv + linear kernel weights of `model_name` at `widths` (shapes only, no arrays)."""
    model = models.get(model_name, num_classes, widths=widths)
    params = jax.eval_shape(lambda: models.init(model, jax.random.key(0), image_shape))["params"]
    return models.count_params(params, prunable_only=True)


def compare_rules(model_name: str, masks: Masks, num_classes: int,
                  image_shape: tuple[int, int, int] = (32, 32, 3)) -> list[dict]:
    """Each applicable rule's widths and prunable weights beside the teacher's remaining weights."""
    remaining = masks_lib.remaining(masks)
    rules = RULES if _is_vgg(model_name) else ("chain",)
    out = []
    for rule in rules:
        widths = student_widths(model_name, masks, rule)
        count = prunable_count(model_name, num_classes, widths, image_shape)
        out.append({"rule": rule, "widths": list(widths), "student_weights": count,
                    "teacher_remaining": remaining, "ratio": count / remaining})
    return out
