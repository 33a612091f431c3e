"""Temperature scaling (Guo, Pleiss, Sun, Weinberger: "On Calibration of Modern Neural Networks",
ICML 2017).

One scalar T > 0 divides a trained network's logits; it is fitted by minimising the negative
log-likelihood on held-out data (the frozen validation split, never the training labels), so it
changes the confidence of the scores and never their order: AP and rankings stay the same, while
thresholds chosen on the calibrated probabilities mean what they say. T > 1 softens an
over-confident network, T < 1 sharpens an under-confident one.

Departure: the paper optimises T with L-BFGS on the NLL; here the NLL is minimised over log T
with SciPy's bounded scalar search (``minimize_scalar``), which is the same one-dimensional
problem without a learning rate to choose and cannot step to a negative T. T is searched in
[1e-2, 1e2].
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

__all__ = ["apply_temperature", "fit_temperature", "negative_log_likelihood"]

LOG_TEMPERATURE_BOUNDS = (math.log(1e-2), math.log(1e2))


def _check(logits: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape (N, C) with C >= 2, got {logits.shape}")
    if not np.isfinite(logits).all():
        raise ValueError("logits must be finite")
    if labels is not None:
        if labels.shape != (logits.shape[0],):
            raise ValueError(f"labels must have shape ({logits.shape[0]},), got {labels.shape}")
        if len(labels) == 0:
            raise ValueError("need at least one labeled row to fit a temperature")
        if labels.min() < 0 or labels.max() >= logits.shape[1]:
            raise ValueError(f"labels must be class indices in [0, {logits.shape[1]})")
    return logits


def negative_log_likelihood(
    logits: np.ndarray, labels: np.ndarray, *, temperature: float = 1.0
) -> float:
    """Mean cross-entropy of ``softmax(logits / temperature)`` against ``labels``.

    logits: (N, C); labels: (N,) class indices.
    """
    labels = np.asarray(labels, dtype=np.int64)
    logits = _check(logits, labels)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    log_probs = log_softmax(logits / temperature, axis=1)
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the NLL of ``softmax(logits / T)`` on ``labels``.

    logits: (N, C) raw network outputs on held-out data; labels: (N,) class indices. Returns a
    float in [0.01, 100].
    """
    labels = np.asarray(labels, dtype=np.int64)
    logits = _check(logits, labels)
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, labels, temperature=math.exp(log_t)),
        bounds=LOG_TEMPERATURE_BOUNDS,
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(math.exp(result.x))


def apply_temperature(logits: np.ndarray, *, temperature: float) -> np.ndarray:
    """Calibrated probabilities ``softmax(logits / temperature)``, shape (N, C)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return softmax(_check(logits) / temperature, axis=1)
