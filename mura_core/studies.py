"""Study-level aggregation: MURA labels studies, so images are scored then averaged.

The MURA paper's rule: a study's probability is the arithmetic mean of its images'
probabilities; abnormal when above the threshold (0.5 in the paper). Kept in one place so
training-time evaluation and screening aggregate identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StudyScores:
    """Per-study arrays in a stable order (sorted by key)."""

    keys: np.ndarray
    prob: np.ndarray
    max_prob: np.ndarray
    images: np.ndarray
    label: np.ndarray  # -1 where unknown
    body_part: np.ndarray


def aggregate(
    study_keys: Sequence[str],
    probs: Sequence[float],
    labels: Sequence[int | None],
    body_parts: Sequence[str],
) -> StudyScores:
    """Mean (and max) of image probabilities per study; label and body part of its images."""
    keys = np.asarray(study_keys, dtype=object)
    p = np.asarray(probs, dtype=np.float64)
    lab = np.array([-1 if v is None else int(v) for v in labels], dtype=np.int64)
    parts = np.asarray(body_parts, dtype=object)
    if not (len(keys) == len(p) == len(lab) == len(parts)):
        raise ValueError("study_keys, probs, labels and body_parts must have equal lengths")
    order = np.argsort(keys.astype(str), kind="stable")
    uniq, start, counts = np.unique(keys[order].astype(str), return_index=True, return_counts=True)
    sums = np.add.reduceat(p[order], start) if len(p) else np.array([])
    maxes = np.maximum.reduceat(p[order], start) if len(p) else np.array([])
    return StudyScores(
        keys=uniq.astype(object),
        prob=sums / np.maximum(counts, 1),
        max_prob=maxes,
        images=counts,
        label=lab[order][start],
        body_part=parts[order][start],
    )
