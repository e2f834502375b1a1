"""Knowledge distillation: the loss family and the teacher.

A `KDSpec` names the loss and its settings; `loss(spec, student_logits, teacher_logits, labels)`
computes it. Each loss is a pure function returning a `KDLoss(total, kd, ce)`: `kd` is the
distillation term exactly as its paper weights it (T^2 included where the paper has it), `ce`
the batch-mean cross-entropy with the labels, `total` the documented sum.

  kd            the paper's vanilla KD (PAPER.md, "Distillation"; Hinton et al. 2015):
                  kd = T^2 KL(softmax(t / T) || softmax(s / T)),  total = alpha kd + (1 - alpha) ce
                PAPER.md: T = 10, alpha = 0.95; the common CIFAR choice T = 4, alpha = 0.9.
  dkd           Decoupled KD (Zhao et al., CVPR 2022): the KL split into the target class's binary
                part (TCKD: [p_target, 1 - p_target]) and the non-target classes' distribution
                renormalised without the target (NCKD):
                  kd = T^2 (alpha TCKD + beta NCKD),  total = ce + kd
                CIFAR-100 (its code's configs): T = 4, alpha = 1, beta = 8 (their code also ramps
                kd in over the first 20 epochs; pdjax does not).
  dist          DIST (Huang et al., NeurIPS 2022): with y = softmax(logits / T), one minus the
                Pearson correlation of student and teacher, per image across classes (inter) and
                per class across the batch (intra), each averaged:
                  kd = T^2 (beta inter + gamma intra),  total = ce + kd
                CIFAR-100 as we read the paper: T = 4, beta = gamma = 2 (ImageNet: T = 1, 1, 1).
  teacher_free  the "virtual teacher" of Yuan et al. (CVPR 2020, Tf-KD_reg): vanilla KD against a
                fixed distribution, probability a (`correct_probability`) on the label and
                (1 - a) / (K - 1) on every other class, softened by T as a teacher's logits
                log(p) would be; no teacher runs. The control for "is the gain regularization?":
                  kd = T^2 KL(p_T || softmax(s / T)),  total = alpha kd + (1 - alpha) ce
                CIFAR-100 (the paper's): a = 0.99, T = 20; alpha per model there (pdjax: 0.1 in
                `KDSpec.for_loss`). The authors' code softens p itself (softmax(p / T)); pdjax
                softens log(p), which at T = 1 is p itself.

The teacher runs in evaluation mode with its masks applied and outside the gradient; only the
student is updated. The train step is `pdjax.steps.make_train_step(..., teacher=..., kd=spec)`:
it takes the spec whole, one compiled step per loss.

Usage:
    parts = pdjax.distill.kd_loss(student_logits, teacher_logits, labels)
    parts = pdjax.distill.loss(pdjax.distill.KDSpec.for_loss("dkd"), student_logits, teacher_logits, labels)
    parts.total, parts.kd, parts.ce
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from pdjax import masks as masks_lib
from pdjax.types import Array, Masks, SpecError, Variables, check

TEMPERATURE = 10.0
ALPHA = 0.95
LOSSES = ("kd", "dkd", "dist", "teacher_free")
# Each loss's settings from its paper's CIFAR-100 experiments (the module docstring).
PAPER_SETTINGS: dict[str, dict[str, float]] = {
    "kd": {"temperature": TEMPERATURE, "alpha": ALPHA},
    "dkd": {"temperature": 4.0, "alpha": 1.0, "beta": 8.0},
    "dist": {"temperature": 4.0, "beta": 2.0, "gamma": 2.0},
    "teacher_free": {"temperature": 20.0, "alpha": 0.1, "correct_probability": 0.99},
}


@dataclasses.dataclass(frozen=True)
class KDSpec:
    """The distillation loss and its settings, checked here, once (module docstring for each
    loss's equation and its paper's CIFAR settings; `for_loss` builds a spec with them).

    Attributes:
      loss: one of `LOSSES`.
      temperature: T (> 0), every loss.
      alpha: kd and teacher_free: the weight of the distillation term in [0, 1]; dkd: TCKD's
        weight (>= 0).
      beta: dkd: NCKD's weight; dist: the inter-class term's (>= 0).
      gamma: dist: the intra-class term's weight (>= 0).
      correct_probability: teacher_free: the virtual teacher's probability on the label, in
        (1 / classes, 1).
    """

    temperature: float = TEMPERATURE
    alpha: float = ALPHA
    loss: str = "kd"
    beta: float = 8.0
    gamma: float = 2.0
    correct_probability: float = 0.99

    def __post_init__(self) -> None:
        weights_alpha = self.loss in ("kd", "teacher_free")
        check([(self.loss in LOSSES, f"kd.loss={self.loss!r}: use one of {', '.join(LOSSES)}"),
               (self.temperature > 0, f"kd.temperature={self.temperature} must be > 0"),
               (0 <= self.alpha <= 1 if weights_alpha else self.alpha >= 0,
                f"kd.alpha={self.alpha} must lie in [0, 1]" if weights_alpha else f"kd.alpha={self.alpha} must be >= 0"),
               (self.beta >= 0, f"kd.beta={self.beta} must be >= 0"),
               (self.gamma >= 0, f"kd.gamma={self.gamma} must be >= 0"),
               (0 < self.correct_probability < 1, f"kd.correct_probability={self.correct_probability} must lie in (0, 1)")])

    @classmethod
    def for_loss(cls, loss: str, **settings: float) -> "KDSpec":
        """A spec of `loss` with its paper's CIFAR-100 settings (`PAPER_SETTINGS`), `settings`
        replacing any of them."""
        if loss not in LOSSES:
            raise SpecError(f"kd.loss={loss!r}: use one of {', '.join(LOSSES)}")
        return cls(loss=loss, **{**PAPER_SETTINGS[loss], **settings})

    @property
    def uses_teacher(self) -> bool:
        """Whether the loss needs a teacher's logits (every loss but teacher_free)."""
        return self.loss != "teacher_free"

    def settings(self) -> dict[str, Any]:
        """The settings the loss reads, by name (what a stage's record keeps)."""
        names = {"kd": ("temperature", "alpha"), "dkd": ("temperature", "alpha", "beta"),
                 "dist": ("temperature", "beta", "gamma"),
                 "teacher_free": ("temperature", "alpha", "correct_probability")}[self.loss]
        return {"loss": self.loss, **{n: getattr(self, n) for n in names}}


class Teacher(NamedTuple):
    """A teacher for `pdjax.train.fit(..., teacher=...)`: its module, variables and masks."""

    model: Any
    variables: Variables
    masks: Masks | None = None

    def masked_variables(self) -> Variables:
        """The variables the teacher runs with: pruned weights zeroed (weight x mask)."""
        return masks_lib.apply_to_variables(self.variables, self.masks)


class KDLoss(NamedTuple):
    """`total` = alpha * kd + (1 - alpha) * ce, where kd = T^2 * KL (batch mean) and ce = CE."""

    total: Array
    kd: Array
    ce: Array


def kd_loss(student_logits: Array, teacher_logits: Array, labels: Array,
            temperature: float = TEMPERATURE, alpha: float = ALPHA) -> KDLoss:
    """The paper's KD loss and its two parts.

    Args:
      student_logits: (batch, classes).
      teacher_logits: (batch, classes); no gradient flows into them.
      labels: (batch,) integer labels.
      temperature: softmax temperature T (> 0).
      alpha: weight of the distillation term, in [0, 1].

    Returns:
      A `KDLoss` of scalars.
    """
    # Shapes are static under jit: a mismatch fails when the step is traced, with chex's message.
    chex.assert_rank(student_logits, 2)
    chex.assert_equal_shape([student_logits, teacher_logits])
    chex.assert_shape(labels, (student_logits.shape[0],))
    s = student_logits.astype(jnp.float32) / temperature
    t = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32)) / temperature
    log_p_t = jax.nn.log_softmax(t)
    log_p_s = jax.nn.log_softmax(s)
    kl = jnp.sum(jnp.exp(log_p_t) * (log_p_t - log_p_s), axis=-1).mean()
    kd = temperature**2 * kl
    ce = optax.softmax_cross_entropy_with_integer_labels(student_logits.astype(jnp.float32), labels).mean()
    return KDLoss(alpha * kd + (1.0 - alpha) * ce, kd, ce)


def _check_shapes(student_logits: Array, teacher_logits: Array | None, labels: Array) -> None:
    # Shapes are static under jit: a mismatch fails when the step is traced, with chex's message.
    chex.assert_rank(student_logits, 2)
    if teacher_logits is not None:
        chex.assert_equal_shape([student_logits, teacher_logits])
    chex.assert_shape(labels, (student_logits.shape[0],))


def _ce(student_logits: Array, labels: Array) -> Array:
    return optax.softmax_cross_entropy_with_integer_labels(student_logits.astype(jnp.float32), labels).mean()


_REMOVED = -1e9  # dkd_loss: the logit that removes the target class


def dkd_loss(student_logits: Array, teacher_logits: Array, labels: Array, temperature: float = 4.0,
             alpha: float = 1.0, beta: float = 8.0) -> KDLoss:
    """Decoupled KD (module docstring): kd = T^2 (alpha TCKD + beta NCKD), total = ce + kd.

    TCKD is the KL between teacher and student of the binary distribution [p_target, 1 -
    p_target] at temperature T; NCKD the KL between their distributions over the non-target
    classes, each renormalised without the target; both summed over classes and averaged over
    the batch.
    """
    _check_shapes(student_logits, teacher_logits, labels)
    s = student_logits.astype(jnp.float32) / temperature
    t = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32)) / temperature
    target = jax.nn.one_hot(labels, s.shape[-1], dtype=bool)
    # The target class removed by a logit so low that its probability is exactly 0 (finite, so
    # that no gradient meets an inf - inf).
    s_rest, t_rest = jnp.where(target, _REMOVED, s), jnp.where(target, _REMOVED, t)

    def binary(logits: Array, rest: Array) -> Array:
        # log p_target and log (1 - p_target), from the logits: stable when either is near 1.
        total = jax.nn.logsumexp(logits, axis=-1)
        log_target = jnp.sum(jnp.where(target, logits, 0.0), axis=-1) - total
        return jnp.stack([log_target, jax.nn.logsumexp(rest, axis=-1) - total], axis=-1)

    b_s, b_t = binary(s, s_rest), binary(t, t_rest)
    tckd = jnp.sum(jnp.exp(b_t) * (b_t - b_s), axis=-1).mean()
    # Non-target classes renormalised: a log-softmax over the logits with the target removed.
    masked_s, masked_t = jax.nn.log_softmax(s_rest), jax.nn.log_softmax(t_rest)
    nckd = jnp.sum(jnp.exp(masked_t) * (masked_t - masked_s), axis=-1).mean()
    kd = temperature**2 * (alpha * tckd + beta * nckd)
    ce = _ce(student_logits, labels)
    return KDLoss(ce + kd, kd, ce)


def _pearson_distance(a: Array, b: Array) -> Array:
    """1 - the Pearson correlation of each row of a with the same row of b, averaged over rows."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    correlation = jnp.sum(a * b, axis=-1) / (jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1) + 1e-8)
    return 1.0 - correlation.mean()


def dist_loss(student_logits: Array, teacher_logits: Array, labels: Array, temperature: float = 4.0,
              beta: float = 2.0, gamma: float = 2.0) -> KDLoss:
    """DIST (module docstring): with y = softmax(logits / T), kd = T^2 (beta inter + gamma intra),
    inter = 1 - mean over images of corr(y_s[i, :], y_t[i, :]), intra = 1 - mean over classes of
    corr(y_s[:, c], y_t[:, c]); total = ce + kd. (The correlation's denominator has 1e-8 added,
    as the authors' code does.)"""
    _check_shapes(student_logits, teacher_logits, labels)
    y_s = jax.nn.softmax(student_logits.astype(jnp.float32) / temperature)
    y_t = jax.nn.softmax(jax.lax.stop_gradient(teacher_logits.astype(jnp.float32)) / temperature)
    inter = _pearson_distance(y_s, y_t)
    intra = _pearson_distance(y_s.T, y_t.T)
    kd = temperature**2 * (beta * inter + gamma * intra)
    ce = _ce(student_logits, labels)
    return KDLoss(ce + kd, kd, ce)


def virtual_teacher(labels: Array, num_classes: int, correct_probability: float = 0.99) -> Array:
    """The teacher-free "virtual teacher" distribution: `correct_probability` on the label, the
    rest spread evenly over the other classes. (batch, classes) float32."""
    rest = (1.0 - correct_probability) / (num_classes - 1)
    return jnp.where(jax.nn.one_hot(labels, num_classes, dtype=bool), correct_probability, rest).astype(jnp.float32)


def teacher_free_loss(student_logits: Array, labels: Array, temperature: float = 20.0, alpha: float = 0.1,
                      correct_probability: float = 0.99) -> KDLoss:
    """Teacher-free KD (module docstring): vanilla KD against `virtual_teacher`, its log taken as
    a teacher's logits: kd = T^2 KL(softmax(log p / T) || softmax(s / T)), total = alpha kd +
    (1 - alpha) ce."""
    _check_shapes(student_logits, None, labels)
    logits = jnp.log(virtual_teacher(labels, student_logits.shape[-1], correct_probability))
    parts = kd_loss(student_logits, logits, labels, temperature, alpha)
    return parts


def loss(spec: KDSpec, student_logits: Array, teacher_logits: Array | None, labels: Array) -> KDLoss:
    """The loss `spec` names, with its settings (teacher_logits are not read by teacher_free)."""
    if spec.loss == "kd":
        return kd_loss(student_logits, teacher_logits, labels, spec.temperature, spec.alpha)
    if spec.loss == "dkd":
        return dkd_loss(student_logits, teacher_logits, labels, spec.temperature, spec.alpha, spec.beta)
    if spec.loss == "dist":
        return dist_loss(student_logits, teacher_logits, labels, spec.temperature, spec.beta, spec.gamma)
    if spec.loss == "teacher_free":
        return teacher_free_loss(student_logits, labels, spec.temperature, spec.alpha, spec.correct_probability)
    raise SpecError(f"kd.loss={spec.loss!r}: use one of {', '.join(LOSSES)}")  # KDSpec checked it
