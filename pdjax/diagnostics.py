"""What a teacher transfers to its student, measured: plain functions over logits and labels.

  agreement         top-1 agreement of student and teacher (Stanton et al., NeurIPS 2021, "Does
                    knowledge distillation really work?": fidelity, not accuracy)
  kl                KL(teacher || student) of their softmax at a temperature (1: Stanton et al.'s)
  expected_calibration_error   ECE of any model: 15 equal-width confidence bins, each bin's
                    |accuracy - mean confidence| weighted by its share of the images
  nll               negative log-likelihood (mean cross-entropy) of any model
  soft_label_entropy  mean entropy (nats) of the teacher's soft labels at the distillation
                    temperature: how much beyond the label it says

Every function takes NumPy or JAX arrays of logits (batch, classes) and integer labels (batch,)
and computes in float64 on the host. `teacher_summary`, `student_summary` and `for_stages` (two
stages loaded with `pdjax.artifacts.load_stage`, on any split's images) group them.

Usage:
    t = pdjax.artifacts.load_stage("runs/x/teacher_seed0/magnitude/round_07")
    s = pdjax.artifacts.load_stage("runs/x/teacher_seed0/student_magnitude_round_07_seed0")
    pdjax.diagnostics.for_stages(s, t, data.test.images, data.test.labels, temperature=4.0)
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _float64(logits: Any) -> np.ndarray:
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2:
        raise ValueError(f"logits must be (batch, classes), got shape {logits.shape}")
    return logits


def _log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def accuracy(logits: Any, labels: Any) -> float:
    """Top-1 accuracy."""
    return float(np.mean(np.argmax(_float64(logits), axis=1) == np.asarray(labels)))


def agreement(student_logits: Any, teacher_logits: Any) -> float:
    """The share of images on which student and teacher predict the same class."""
    s, t = _float64(student_logits), _float64(teacher_logits)
    if s.shape != t.shape:
        raise ValueError(f"student logits {s.shape} and teacher logits {t.shape} differ in shape")
    return float(np.mean(np.argmax(s, axis=1) == np.argmax(t, axis=1)))


def kl(teacher_logits: Any, student_logits: Any, temperature: float = 1.0) -> float:
    """Mean over images of KL(softmax(t / T) || softmax(s / T)), in nats."""
    t, s = _float64(teacher_logits), _float64(student_logits)
    if s.shape != t.shape:
        raise ValueError(f"student logits {s.shape} and teacher logits {t.shape} differ in shape")
    log_p, log_q = _log_softmax(t, temperature), _log_softmax(s, temperature)
    return float(np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=1)))


def nll(logits: Any, labels: Any) -> float:
    """Mean negative log-likelihood of the labels (cross-entropy), in nats."""
    log_p = _log_softmax(_float64(logits))
    labels = np.asarray(labels)
    return float(-np.mean(log_p[np.arange(len(labels)), labels]))


def expected_calibration_error(logits: Any, labels: Any, bins: int = 15) -> float:
    """ECE: the images binned by their top probability into `bins` equal-width bins over [0, 1]
    (right-closed: (0, 1/15], (1/15, 2/15], ...); the sum over bins of the bin's share of the
    images times |its accuracy - its mean top probability|."""
    probabilities = np.exp(_log_softmax(_float64(logits)))
    confidence = probabilities.max(axis=1)
    correct = np.argmax(probabilities, axis=1) == np.asarray(labels)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


def soft_label_entropy(teacher_logits: Any, temperature: float) -> float:
    """Mean entropy (nats) of softmax(t / T): the soft labels a student distils from."""
    log_p = _log_softmax(_float64(teacher_logits), temperature)
    return float(-np.mean(np.sum(np.exp(log_p) * log_p, axis=1)))


def teacher_summary(teacher_logits: Any, labels: Any, temperature: float) -> dict[str, float]:
    """A teacher's accuracy, ECE, NLL and soft-label entropy at the distillation temperature."""
    return {"accuracy": accuracy(teacher_logits, labels), "ece": expected_calibration_error(teacher_logits, labels),
            "nll": nll(teacher_logits, labels), "entropy": soft_label_entropy(teacher_logits, temperature)}


def student_summary(student_logits: Any, teacher_logits: Any, labels: Any) -> dict[str, float]:
    """A student's accuracy, ECE and NLL, and its agreement with and KL from its teacher (T = 1)."""
    return {"accuracy": accuracy(student_logits, labels), "ece": expected_calibration_error(student_logits, labels),
            "nll": nll(student_logits, labels), "agreement": agreement(student_logits, teacher_logits),
            "kl": kl(teacher_logits, student_logits)}


def for_stages(student: Any, teacher: Any, images: Any, labels: Any, temperature: float,
               batch_size: int = 500) -> dict[str, dict[str, float]]:
    """`teacher_summary` and `student_summary` of two stages loaded with
    `pdjax.artifacts.load_stage` (masks applied), on `images` (uint8) of any split."""
    from pdjax import artifacts

    t = artifacts.logits(teacher, images, batch_size)
    s = artifacts.logits(student, images, batch_size)
    return {"teacher": teacher_summary(t, labels, temperature), "student": student_summary(s, t, labels)}
