"""Calibration: ECE against a direct count, temperature scaling of an over-confident model."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from mura_core.calibration import apply_temperature, fit_temperature, reliability


def population(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from calibrated logits, and those logits."""
    z = rng.normal(0.0, 1.5, n)
    return (rng.random(n) < expit(z)).astype(int), z


def test_ece_is_the_weighted_gap_of_each_bin() -> None:
    rng = np.random.default_rng(0)
    y, z = population(rng, 3000)
    p = expit(3 * z)
    found = reliability(y, p)
    gap = 0.0
    for b in range(10):
        lo, hi = b / 10, (b + 1) / 10
        m = (p >= lo) & ((p < hi) if b < 9 else (p <= hi))
        if m.any():
            gap += m.sum() / len(p) * abs(y[m].mean() - p[m].mean())
    assert found.ece == pytest.approx(gap, rel=1e-9)
    assert sum(found.count) == len(p)


def test_temperature_scaling_lowers_the_ece_of_an_over_confident_model_on_test() -> None:
    rng = np.random.default_rng(1)
    y_val, z_val = population(rng, 2000)
    y_test, z_test = population(rng, 2000)
    over_val, over_test = expit(4 * z_val), expit(4 * z_test)  # logits 4x too large
    t = fit_temperature(y_val, over_val)
    assert t == pytest.approx(4.0, rel=0.15)
    before = reliability(y_test, over_test).ece
    after = reliability(y_test, apply_temperature(over_test, t)).ece
    assert before > 0.1 and after < 0.05 and after < before / 3  # 0.18 → 0.03
    # a calibrated model is left (almost) alone
    assert fit_temperature(y_val, expit(z_val)) == pytest.approx(1.0, rel=0.15)


def test_temperature_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        fit_temperature([1, 1, 1], [0.2, 0.7, 0.9])
