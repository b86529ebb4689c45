"""Has a model collapsed? Outputs with no spread, told apart from a model that is merely weak.

A collapsed classifier gives every image (nearly) the same score: the seed CNN once ended a
fresh-clone run with every output ≈ 0.48 and study AUROC 0.39, and nothing said so. Two signs,
measured on the validation split after every epoch and on the final model:

- no spread: the standard deviation of the logits is below `MIN_LOGIT_STD` (0.01 — a logit
  std of 0.01 around 0 is a probability spread of ±0.0025);
- one-sided and not ranking: both labels are present, every prediction falls on the same
  side of the threshold — the model says "normal" (or "abnormal") to everything — and its
  scores do not rank abnormal above normal clearly: a model ranks when its AUROC is at
  least `MIN_RANKING_AUROC` (0.6) and beyond chance, the one-sided Mann–Whitney test of
  AUROC > 0.5 (AUROC is its U statistic, normalized) giving p <= `RANKING_P` (0.05).

A model that ranks is not collapsed, even one-sided: on real, imbalanced data (FracAtlas,
17 % fractured, unweighted loss) the seed CNN's val AUROC was 0.72–0.75 while every image
stayed below 0.5. Its operating threshold is then chosen on val (`metrics.val_threshold`),
and the model carries it.

Outputs that are not numbers (a diverged run's NaN) count as collapsed too.

Early epochs are often one-sided while the model is still learning, so the per-epoch flag is
information (`val_collapsed`); only a final model with the sign makes a run fail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import mannwhitneyu

MIN_LOGIT_STD = 0.01
RANKING_P = 0.05  # 3 abnormal ranked above 3 normal: exact p = 1/20, the least that ranks
MIN_RANKING_AUROC = 0.6  # significance alone: 1 chance-level model in 20 would "rank"


@dataclass(frozen=True)
class Spread:
    """How much a model's outputs vary over a labelled split, and whether that is collapse."""

    logit_std: float
    one_sided: bool  # every prediction on one side of the threshold, both labels present
    images: int
    not_finite: int = 0  # outputs that are NaN or infinite
    auroc: float | None = None  # image-level, when both labels are present
    ranking_p: float | None = None  # one-sided Mann–Whitney p of AUROC > 0.5

    @property
    def ranks(self) -> bool:
        """Abnormal images score clearly above normal ones: AUROC >= 0.6, beyond chance."""
        return (
            self.auroc is not None
            and self.ranking_p is not None
            and self.auroc >= MIN_RANKING_AUROC
            and self.ranking_p <= RANKING_P
        )

    @property
    def collapsed(self) -> bool:
        return self.images > 0 and (
            self.not_finite > 0
            or self.logit_std < MIN_LOGIT_STD
            or (self.one_sided and not self.ranks)
        )

    def describe(self) -> str:
        """One phrase for an error line: why the outputs count as collapsed."""
        if self.not_finite:
            return f"outputs are not numbers (NaN) for {self.not_finite} images"
        if self.logit_std < MIN_LOGIT_STD:
            return f"every image gets the same score (logit std {self.logit_std:.2g})"
        auroc = "" if self.auroc is None else f" (AUROC {self.auroc:.2f})"
        return (
            "every image falls on the same side of the threshold and abnormal images are "
            f"not ranked above normal ones{auroc}"
        )


def _logits(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def output_spread(probs: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> Spread:
    """Spread of probabilities `probs` over images with labels 0/1 (other labels ignored)."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    known = np.isin(labels, (0, 1))
    probs, labels = probs[known], labels[known].astype(int)
    if probs.size == 0:
        return Spread(logit_std=0.0, one_sided=False, images=0)
    not_finite = int((~np.isfinite(probs)).sum())
    if not_finite:
        return Spread(float("nan"), False, int(probs.size), not_finite)
    flagged = probs > threshold
    both_labels = labels.min() != labels.max()
    one_sided = bool(both_labels and (flagged.all() or not flagged.any()))
    auroc = p_value = None
    if both_labels:
        positive, negative = probs[labels == 1], probs[labels == 0]
        test = mannwhitneyu(positive, negative, alternative="greater")
        auroc = float(test.statistic) / (positive.size * negative.size)
        p_value = float(test.pvalue)
    return Spread(float(_logits(probs).std()), one_sided, int(probs.size), 0, auroc, p_value)
