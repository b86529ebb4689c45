"""Has a model collapsed? Outputs that carry no information, told apart from a weak model.

A collapsed classifier gives every image (nearly) the same score: the seed CNN once ended a
fresh-clone run with every output ≈ 0.48 and study AUROC 0.39, and nothing said so. The signs,
measured on the validation split after every epoch and on the final model:

- no spread: the standard deviation of the logits is below `MIN_LOGIT_STD` (0.01 — a logit
  std of 0.01 around 0 is a probability spread of ±0.0025);
- not numbers: a diverged run's NaN or infinite outputs;
- one-sided and shown not to rank: both labels are present, every prediction falls on the
  same side of the threshold — the model says "normal" (or "abnormal") to everything — and
  the validation images show that its scores do not rank abnormal above normal: the upper
  end of the AUROC's 95 % interval (Hanley & McNeil's standard error, Radiology 1982) is
  below `MIN_RANKING_AUROC` (0.6).

Collapse is about ranking, not about a threshold. On real, imbalanced data (FracAtlas, 17 %
fractured, unweighted loss) the seed CNN's val AUROC was 0.72–0.75 while every image stayed
below 0.5: a model that ranks is not collapsed, and its operating threshold is then chosen on
val (`metrics.val_threshold`) and carried by the model. A short run on a small archive (a few
epochs, 15 validation images, AUROC 0.54) is weak, not shown to be collapsed: its interval
reaches well above 0.6, so it is registered and its figures say how weak it is.

Early epochs are often one-sided while the model is still learning, so the per-epoch flag is
information (`val_collapsed`); only a final model with a sign makes a run fail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

from mura_core.decisions import PAPER_THRESHOLD, flagged

MIN_LOGIT_STD = 0.01
MIN_RANKING_AUROC = 0.6  # a model whose AUROC is surely below this does not rank
Z95 = 1.959964


def auroc_interval(auroc: float, positives: int, negatives: int) -> tuple[float, float]:
    """The AUROC's 95 % interval from Hanley & McNeil's standard error (clipped to 0..1)."""
    a = min(max(auroc, 1e-9), 1 - 1e-9)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    variance = (a * (1 - a) + (positives - 1) * (q1 - a * a) + (negatives - 1) * (q2 - a * a)) / (
        positives * negatives
    )
    half = Z95 * math.sqrt(max(variance, 0.0))
    return max(0.0, auroc - half), min(1.0, auroc + half)


@dataclass(frozen=True)
class Spread:
    """How much a model's outputs vary over a labelled split, and whether that is collapse."""

    logit_std: float
    one_sided: bool  # every prediction on one side of the threshold, both labels present
    images: int
    not_finite: int = 0  # outputs that are NaN or infinite
    auroc: float | None = None  # image-level, when both labels are present
    auroc_high: float | None = None  # the upper end of its 95 % interval

    @property
    def shown_not_to_rank(self) -> bool:
        """The validation images show the AUROC is below 0.6 (its interval's upper end)."""
        return self.auroc_high is not None and self.auroc_high < MIN_RANKING_AUROC

    @property
    def collapsed(self) -> bool:
        return self.images > 0 and (
            self.not_finite > 0
            or self.logit_std < MIN_LOGIT_STD
            or (self.one_sided and self.shown_not_to_rank)
        )

    def describe(self) -> str:
        """One phrase for an error line: why the outputs count as collapsed."""
        if self.not_finite:
            return f"outputs are not numbers (NaN) for {self.not_finite} images"
        if self.logit_std < MIN_LOGIT_STD:
            return f"every image gets the same score (logit std {self.logit_std:.2g})"
        return (
            "every image falls on the same side of the threshold and abnormal images are "
            f"not ranked above normal ones (AUROC {self.auroc:.2f}, 95 % CI up to "
            f"{self.auroc_high:.2f})"
        )


def _logits(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def output_spread(
    probs: np.ndarray, labels: np.ndarray, threshold: float = PAPER_THRESHOLD
) -> Spread:
    """Spread of probabilities `probs` over images with labels 0/1 (other labels ignored)."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    known = np.isin(labels, (0, 1))
    probs, labels = probs[known], labels[known].astype(int)
    if probs.size == 0:
        return Spread(logit_std=0.0, one_sided=False, images=0)
    not_finite = int((~np.isfinite(probs)).sum())
    if not_finite:
        return Spread(float("nan"), False, int(probs.size), not_finite)
    flags = flagged(probs, threshold)  # the decision's rule (`decisions`)
    both_labels = labels.min() != labels.max()
    one_sided = bool(both_labels and (flags.all() or not flags.any()))
    auroc = high = None
    if both_labels:
        auroc = float(roc_auc_score(labels, probs))
        positives = int(labels.sum())
        high = auroc_interval(auroc, positives, int(labels.size) - positives)[1]
    return Spread(float(_logits(probs).std()), one_sided, int(probs.size), 0, auroc, high)
