"""Knowledge distillation (vanilla KD, PAPER.md "Distillation").

    loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)

with the KL summed over classes and averaged over the batch, and CE the batch mean. The teacher
runs in evaluation mode with its masks applied and outside the gradient; only the student is
updated. The KD train step itself is `pdjax.steps.make_train_step(..., teacher=..., kd=...)`.

Usage:
    parts = pdjax.distill.kd_loss(student_logits, teacher_logits, labels)
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
from pdjax.types import Array, Masks, Variables, check

TEMPERATURE = 10.0
ALPHA = 0.95


@dataclasses.dataclass(frozen=True)
class KDSpec:
    """The KD loss's settings (PAPER.md: T = 10, alpha = 0.95), checked here, once."""

    temperature: float = TEMPERATURE
    alpha: float = ALPHA

    def __post_init__(self) -> None:
        check([(self.temperature > 0, f"kd.temperature={self.temperature} must be > 0"),
               (0 <= self.alpha <= 1, f"kd.alpha={self.alpha} must lie in [0, 1]")])


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
