"""The one decision on a study, top to bottom: image probabilities → study → flagged.

1. Probabilities. A model trained with `--calibrate` carries a temperature T; its
   predictors divide their logits by it, so the probabilities that reach this module are the
   calibrated ones already. `OperatingPoint.calibrated` does the same to probabilities of a
   raw forward pass (sigmoid(logit(p) / T), `calibration.apply_temperature`); T = 1 changes
   nothing.
2. Aggregation (`aggregate`). Images are grouped by study key. A study's probability is the
   arithmetic mean of its images' (the MURA paper's rule); their maximum and count are kept
   for the report. Its body part is the first of its images' in table order (`part_order`:
   a MURA part, then a named one, then OTHER), so an image whose header names no part does
   not split a wrist study in two; its patient key is that image's.
3. Label (`label_from_range`). MURA labels studies, not images, so a study's images all carry
   its label, and that label is the study's. Where they disagree (a mislabelled image, two
   reads) the study is unlabelled (-1), never guessed: "abnormal if any image is" (max)
   would count a conflict as a confident positive and "normal unless all are" (min) as a
   confident negative, either of which would bias the metrics by the labeller's slips.
   Images without a label are left out of the range; a study none of whose images is
   labelled is unlabelled. The listing says each conflict (`studies.settle_labels`).
4. Threshold (`OperatingPoint`, `flagged`). Flagged exactly when probability > threshold:
   strict, so a study at the threshold is not flagged. Each study is decided at its body
   part's threshold where the model has one, else at the model's threshold; a threshold
   given by the user (`--threshold`) replaces them all (`ModelInfo.operating_point`). The
   same rule decides images (image-level metrics, collapse); `threshold_including` is its
   inverse, the threshold that flags exactly the probabilities >= t (a ROC curve's cut).

Training's evaluation, screening's study table, monitoring, the DICOM SR and the metrics
all decide through this module, so a study reads the same in all of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from mura_core.body_parts import part_order

PAPER_THRESHOLD = 0.5


def flagged(
    probs: np.ndarray | Sequence[float] | float, thresholds: np.ndarray | float
) -> np.ndarray:
    """The rule itself: probability > threshold (strict), elementwise."""
    return np.asarray(probs, dtype=np.float64) > np.asarray(thresholds, dtype=np.float64)


def threshold_including(cut: float) -> float:
    """The threshold that flags exactly the probabilities >= `cut` (at most 1), i.e. the
    strict rule's form of an inclusive cut such as `sklearn.metrics.roc_curve`'s."""
    return float(np.nextafter(min(float(cut), 1.0), -np.inf))


@dataclass(frozen=True)
class OperatingPoint:
    """How a model decides: its threshold, per-body-part thresholds (a part not named takes
    `threshold`) and temperature. Built by `ModelInfo.operating_point`."""

    threshold: float = PAPER_THRESHOLD
    part_thresholds: Mapping[str, float] = field(default_factory=dict)
    temperature: float = 1.0

    def __post_init__(self) -> None:
        parts = {str(k): float(v) for k, v in self.part_thresholds.items()}
        object.__setattr__(self, "threshold", float(self.threshold))
        object.__setattr__(self, "part_thresholds", parts)
        object.__setattr__(self, "temperature", float(self.temperature))

    def threshold_for(self, body_part: str | None) -> float:
        """The threshold of a study (or image) of this body part."""
        return self.part_thresholds.get(body_part or "", self.threshold)

    def thresholds(self, body_parts: Sequence[str] | np.ndarray) -> np.ndarray:
        """Each entry's threshold, by its body part (float64)."""
        parts = np.asarray(body_parts, dtype=object)
        if not self.part_thresholds or parts.size == 0:
            return np.full(parts.shape, self.threshold, dtype=np.float64)
        names, index = np.unique(parts.astype(str), return_inverse=True)
        return np.array([self.threshold_for(n) for n in names], dtype=np.float64)[index]

    def flag(
        self, probs: np.ndarray | Sequence[float], body_parts: Sequence[str] | np.ndarray | None
    ) -> np.ndarray:
        """Which of these (calibrated) probabilities are flagged, each at its body part's
        threshold; `body_parts` None: all at `threshold`."""
        if body_parts is None:
            return flagged(probs, self.threshold)
        return flagged(probs, self.thresholds(body_parts))

    def calibrated(self, probs: np.ndarray | Sequence[float]) -> np.ndarray:
        """Raw probabilities as the model with this temperature gives them (T = 1: the
        probabilities themselves, unclipped)."""
        if self.temperature == 1.0:
            return np.asarray(probs, dtype=np.float64)
        from mura_core.calibration import apply_temperature  # scikit-learn: paid only here

        return apply_temperature(probs, self.temperature)


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


@dataclass(frozen=True)
class StudyScores:
    """Per-study arrays in a stable order (sorted by key)."""

    keys: np.ndarray
    prob: np.ndarray  # mean of the images' probabilities
    max_prob: np.ndarray
    images: np.ndarray
    label: np.ndarray  # -1 where unknown
    body_part: np.ndarray
    patient_key: np.ndarray  # None where not given


def _known_labels(labels: Sequence[int | None] | np.ndarray) -> np.ndarray:
    """int64 labels, -1 where None or negative."""
    if isinstance(labels, np.ndarray) and labels.dtype.kind in "iu":
        return np.where(labels < 0, -1, labels).astype(np.int64)
    return np.array([-1 if v is None or v < 0 else int(v) for v in labels], dtype=np.int64)


def _part_rank(parts: np.ndarray) -> np.ndarray:
    """Each body part's place in table order (`part_order`)."""
    names, index = np.unique(parts.astype(str), return_inverse=True)
    place = {p: i for i, p in enumerate(part_order(names.tolist()))}
    return np.array([place[n] for n in names], dtype=np.int64)[index]


def aggregate(
    study_keys: Sequence[str] | np.ndarray,
    probs: Sequence[float] | np.ndarray,
    labels: Sequence[int | None] | np.ndarray,
    body_parts: Sequence[str] | np.ndarray,
    patient_keys: Sequence[str] | np.ndarray | None = None,
) -> StudyScores:
    """Study rows from image rows (see the module docstring): mean and max probability,
    image count, label, body part and patient key of each study, sorted by key."""
    keys = np.asarray(study_keys, dtype=object)
    p = np.asarray(probs, dtype=np.float64)
    lab = _known_labels(labels)
    parts = np.asarray(body_parts, dtype=object)
    patients = np.full(len(keys), None, dtype=object)
    if patient_keys is not None:
        patients = np.asarray(patient_keys, dtype=object)
    if not (len(keys) == len(p) == len(lab) == len(parts) == len(patients)):
        raise ValueError("study_keys, probs, labels, body_parts and patient_keys differ in length")
    if len(p) == 0:
        empty = np.array([], dtype=object)
        none = np.array([], dtype=np.int64)
        return StudyScores(empty, np.array([]), np.array([]), none, none, empty, empty)
    # stable: a study's images keep their order, and so do the sums
    order = np.lexsort((patients.astype(str), _part_rank(parts), keys.astype(str)))
    uniq, start, counts = np.unique(keys[order].astype(str), return_index=True, return_counts=True)
    known = lab[order]
    lowest = np.minimum.reduceat(np.where(known < 0, 2, known), start)
    return StudyScores(
        keys=uniq.astype(object),
        prob=np.add.reduceat(p[order], start) / counts,
        max_prob=np.maximum.reduceat(p[order], start),
        images=counts.astype(np.int64),
        label=label_from_range(lowest, np.maximum.reduceat(known, start)),
        body_part=parts[order][start],
        patient_key=patients[order][start],
    )
