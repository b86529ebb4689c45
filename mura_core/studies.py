"""Study-level aggregation: MURA labels studies, so images are scored then averaged.

The MURA paper's rule: a study's probability is the arithmetic mean of its images'
probabilities; abnormal when above the threshold (0.5 in the paper). Kept in one place so
training-time evaluation and screening aggregate identically. A study's label is the one
label its images agree on (`label_from_range`): images that disagree leave it unlabelled,
said by the listing as a `conflicting_labels` problem (`settle_labels`), never guessed.
`Predictions` is the shape image scores travel in from batch inference to evaluation.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from .records import ImageRef, Problem

CONFLICTING_LABELS = "conflicting_labels"


def label_from_range(lowest: np.ndarray, highest: np.ndarray) -> np.ndarray:
    """Per study, from the smallest and largest *known* label of its images (-1 where none is
    known): that label where they agree, -1 (unlabelled) where they disagree or none is.
    The one rule for a study's label, in listing, training and screening."""
    lowest, highest = np.asarray(lowest), np.asarray(highest)
    return np.where((lowest == highest) & (highest >= 0), highest, -1).astype(np.int64)


def study_label(labels: Sequence[int | None]) -> int | None:
    """One study's label from its images' labels (None: unknown or conflicting)."""
    known = [int(v) for v in labels if v is not None and v >= 0]
    if not known:
        return None
    label = int(label_from_range(np.array([min(known)]), np.array([max(known)]))[0])
    return None if label < 0 else label


def settle_labels(
    refs: Sequence[ImageRef], *, unlabel: Collection[str] = ()
) -> tuple[tuple[ImageRef, ...], list[Problem]]:
    """Listed images with one label per study: a study whose images are labelled
    differently becomes unlabelled and one `conflicting_labels` problem (on its first
    image's path); studies in `unlabel` (conflicts a lister found in its CSV rows, said
    there) become unlabelled too."""
    by_study: dict[str, list[ImageRef]] = {}
    for ref in refs:
        by_study.setdefault(ref.study_key, []).append(ref)
    conflicted = set(unlabel)
    problems: list[Problem] = []
    for key, images in by_study.items():
        labels = [r.label for r in images]
        if key in conflicted or study_label(labels) is not None or not any(labels):
            continue  # one label, none known, or already said
        conflicted.add(key)
        problems.append(
            Problem(
                images[0].relpath,
                "list",
                CONFLICTING_LABELS,
                f"the study's images are labelled differently ({labels.count(0)} normal, "
                f"{labels.count(1)} abnormal): the study is left unlabelled",
            )
        )
    if not conflicted:
        return tuple(refs), problems
    return tuple(replace(r, label=None) if r.study_key in conflicted else r for r in refs), problems


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
    known = lab[order]
    lowest = np.minimum.reduceat(np.where(known < 0, 2, known), start) if len(p) else known
    highest = np.maximum.reduceat(known, start) if len(p) else known
    return StudyScores(
        keys=uniq.astype(object),
        prob=sums / np.maximum(counts, 1),
        max_prob=maxes,
        images=counts,
        label=label_from_range(lowest, highest),
        body_part=parts[order][start],
    )


@dataclass(frozen=True)
class Predictions:
    """Scored images: parallel numpy columns, one entry per image, in any order.

    `label` is the study label as int64, -1 where unknown (as in `StudyScores`); `split` the
    shard split each image came from.
    """

    image_id: np.ndarray
    study_key: np.ndarray
    patient_key: np.ndarray
    body_part: np.ndarray
    label: np.ndarray
    split: np.ndarray
    prob: np.ndarray

    def __post_init__(self) -> None:
        lengths = {f.name: len(getattr(self, f.name)) for f in fields(self)}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"prediction columns differ in length: {lengths}")

    @classmethod
    def from_columns(cls, columns: Mapping[str, Any]) -> Predictions:
        """From a predictor's output columns (extra ones ignored); a null or NaN label is -1.
        No rows at all may come without columns."""
        n = len(columns["prob"]) if "prob" in columns else 0

        def column(name: str) -> np.ndarray:
            if n == 0 and name not in columns:
                return np.array([], dtype=object)
            return np.asarray(columns[name], dtype=object)

        label = np.asarray(columns["label"] if n else [], dtype=np.float64)
        return cls(
            image_id=column("image_id"),
            study_key=column("study_key"),
            patient_key=column("patient_key"),
            body_part=column("body_part"),
            label=np.where(np.isnan(label), -1, label).astype(np.int64),
            split=column("split"),
            prob=np.asarray(columns["prob"] if n else [], dtype=np.float64),
        )

    def __len__(self) -> int:
        return len(self.prob)

    def where(self, mask: np.ndarray) -> Predictions:
        """The rows where `mask` (a boolean array) is true."""
        return Predictions(**{f.name: getattr(self, f.name)[mask] for f in fields(self)})

    def labels(self) -> list[int | None]:
        """Labels as metrics take them: 0, 1, or None where unknown."""
        return [None if v < 0 else int(v) for v in self.label]

    def studies(self) -> StudyScores:
        """Study-level scores (mean of each study's image probabilities)."""
        return aggregate(list(self.study_key), list(self.prob), self.labels(), list(self.body_part))
