"""Collapse is about ranking, not about a threshold: a model that ranks abnormal above
normal is not collapsed even when every image is below 0.5; no spread, NaN, or one-sided
and shown not to rank still is. The threshold is then chosen on val (Youden's J), unless the
loss is class-weighted (the papers' 0.5) or a target sensitivity is asked for."""

from __future__ import annotations

import numpy as np
import pytest

from mura_core.collapse import auroc_interval, output_spread
from mura_core.metrics import val_threshold


def _imbalanced(rng: np.random.Generator, n: int = 400, shift: float = 1.0) -> tuple:
    """17 % abnormal (FracAtlas's share); logits normal/abnormal −3 / −3+shift."""
    y = (rng.random(n) < 0.17).astype(int)
    logits = rng.normal(-3.0, 0.5, n) + shift * y
    return 1.0 / (1.0 + np.exp(-logits)), y


def test_a_one_sided_model_that_ranks_is_not_collapsed() -> None:
    p, y = _imbalanced(np.random.default_rng(0))
    spread = output_spread(p, y)
    assert spread.one_sided and p.max() < 0.5
    assert spread.auroc is not None and spread.auroc > 0.85 and not spread.shown_not_to_rank
    assert not spread.collapsed


def test_one_sided_and_shown_not_to_rank_no_spread_and_nan_are_collapsed() -> None:
    """A chance-level model on a validation set big enough to tell (FracAtlas's val: 410)."""
    p, y = _imbalanced(np.random.default_rng(1), n=410, shift=-0.3)
    spread = output_spread(p, y)
    assert spread.one_sided and spread.shown_not_to_rank and spread.collapsed
    assert "not ranked above normal ones (AUROC 0." in spread.describe()
    same = output_spread(np.full(50, 0.3), np.r_[np.ones(10), np.zeros(40)])
    assert same.collapsed and "same score" in same.describe()
    nan = output_spread(np.r_[np.full(5, np.nan), np.full(5, 0.6)], np.r_[np.ones(5), np.zeros(5)])
    assert nan.collapsed and "not numbers" in nan.describe()


def test_a_short_run_on_a_small_val_split_is_weak_not_collapsed() -> None:
    """A user's 3-epoch run on 80 studies: 15 validation images, AUROC about 0.54, every
    image below 0.5 — too few images to show it does not rank, so it is registered."""
    y = np.array([0] * 10 + [1] * 5)
    p = np.linspace(0.30, 0.44, 15)[np.random.default_rng(3).permutation(15)]
    spread = output_spread(p, y)
    assert spread.one_sided and not spread.collapsed
    assert spread.auroc_high is not None and spread.auroc_high > 0.6


def test_the_interval_matches_hanley_and_mcneil() -> None:
    """A = 0.8 with 50 abnormal and 50 normal: Q1 = 2/3, Q2 = 0.711, SE = 0.0445 by hand."""
    low, high = auroc_interval(0.8, 50, 50)
    assert (high - low) / (2 * 1.959964) == pytest.approx(0.0445, abs=2e-4)


def test_the_threshold_is_chosen_on_val_unless_the_loss_is_weighted() -> None:
    p, y = _imbalanced(np.random.default_rng(2))
    youden = val_threshold(y, p, target_sensitivity=None, weighted_loss=False)
    assert youden.rule.startswith("Youden") and youden.value < 0.5
    flagged = p > youden.value
    assert 0 < flagged.sum() < len(p)  # no longer one-sided
    sens, spec = flagged[y == 1].mean(), (~flagged[y == 0]).mean()
    for t in np.quantile(p, np.linspace(0.05, 0.95, 19)):  # no threshold does better on J
        f = p > t
        assert f[y == 1].mean() + (~f[y == 0]).mean() <= sens + spec + 1e-12
    paper = val_threshold(y, p, target_sensitivity=None, weighted_loss=True)
    assert paper.value == 0.5 and "class-weighted" in paper.rule
    target = val_threshold(y, p, target_sensitivity=0.9, weighted_loss=True)
    assert (p[y == 1] > target.value).mean() >= 0.9 and "sensitivity" in target.rule
    one_class = val_threshold(
        np.zeros(5, int), np.linspace(0, 1, 5), target_sensitivity=None, weighted_loss=False
    )
    assert one_class.value == pytest.approx(0.5) and "single class" in one_class.rule
