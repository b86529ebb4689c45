"""Calibration: is a study probability of 0.8 abnormal eight times in ten?

1. `reliability(labels, probs)`: the reliability curve of scikit-learn
   (`sklearn.calibration.calibration_curve`, ten equal-width bins) with each bin's count, and
   the expected calibration error, ECE = sum over bins of n_b / n * |observed_b - mean_b|.
   Training logs it per split at study level, with a reliability diagram.
2. `fit_temperature(labels, probs, groups)`: temperature scaling (Guo et al., 2017): the
   T > 0 that minimizes the binary cross-entropy of the validation studies' probabilities,
   each the mean of its images' sigmoid(logit / T), as `decisions.aggregate` makes a
   study's probability (`scipy.optimize.minimize_scalar` over log T). A model trained with
   `--calibrate` carries T (`ModelInfo.temperature`) and every predictor divides its logits
   by it, so screening and evaluation use the calibrated probabilities; T = 1 changes
   nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit
from sklearn.calibration import calibration_curve

BINS = 10
_EPS = 1e-15  # float64 probabilities keep their logits up to about ±34


@dataclass(frozen=True)
class Reliability:
    """One reliability curve: per non-empty bin the mean probability, the observed rate of
    abnormal and the count; the ECE over them."""

    mean_prob: tuple[float, ...]
    observed: tuple[float, ...]
    count: tuple[int, ...]
    ece: float


def reliability(labels: Sequence[int], probs: Sequence[float], bins: int = BINS) -> Reliability:
    """scikit-learn's reliability curve (uniform bins) and the expected calibration error."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
    if len(y) == 0:
        raise ValueError("reliability of no samples")
    observed, mean_prob = calibration_curve(y, p, n_bins=bins, strategy="uniform")
    # the same bins as calibration_curve: edges 0, 1/bins, …, 1, the last bin closed
    index = np.searchsorted(np.linspace(0.0, 1.0, bins + 1)[1:-1], p, side="right")
    counts = np.bincount(index, minlength=bins)
    counts = counts[counts > 0]
    ece = float(np.sum(counts / len(p) * np.abs(observed - mean_prob)))
    return Reliability(
        tuple(float(v) for v in mean_prob),
        tuple(float(v) for v in observed),
        tuple(int(v) for v in counts),
        ece,
    )


def apply_temperature(probs: Sequence[float], temperature: float) -> np.ndarray:
    """sigmoid(logit(p) / T): what the model's probabilities become with temperature T (the
    model's own: `decisions.OperatingPoint.calibrated`)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0 - _EPS)
    return expit(logit(p) / temperature)


def fit_temperature(
    labels: Sequence[int], probs: Sequence[float], groups: Sequence[str] | None = None
) -> float:
    """The temperature minimizing the binary cross-entropy on these (validation) samples,
    within [0.05, 20]; probabilities in, so it can be fitted after prediction. With
    `groups` (each image's study), the cross-entropy of the studies' mean probabilities:
    what screening flags and the reliability diagram shows are studies."""
    y = np.asarray(labels, dtype=np.float64)
    z = logit(np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0 - _EPS))
    if len(np.unique(y)) < 2:
        raise ValueError("temperature scaling needs both classes in the validation split")
    index = np.unique(
        np.asarray(groups if groups is not None else np.arange(len(y))).astype(str),
        return_inverse=True,
    )[1]
    counts = np.bincount(index)
    target = np.bincount(index, weights=y) / counts  # a study's images share its label

    def loss(log_t: float) -> float:
        q = np.bincount(index, weights=expit(z / np.exp(log_t))) / counts
        q = np.clip(q, _EPS, 1.0 - _EPS)
        return float(-np.mean(target * np.log(q) + (1 - target) * np.log(1 - q)))

    found = minimize_scalar(loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(found.x))
