"""Studies as listings and predictions carry them; how a study is decided is `decisions`.

`settle_labels`: listed images with one label per study, by the one label rule
(`decisions.study_label`): a study whose images are labelled differently is left
unlabelled and said as a `conflicting_labels` problem, never guessed. `Predictions` is the
shape image scores travel in from batch inference to evaluation; `Predictions.studies()`
its study rows (`decisions.aggregate`: the mean of the images' probabilities).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from mura_core.decisions import StudyScores, aggregate, study_label
from mura_core.listing import ImageRef, Problem

CONFLICTING_LABELS = "conflicting_labels"


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
        """Study-level scores (`decisions.aggregate`: mean of each study's image
        probabilities)."""
        return aggregate(self.study_key, self.prob, self.label, self.body_part, self.patient_key)
