"""Training's evaluation and screening read the same images as the same studies.

Pure: the functions each path calls (`Predictions.studies` and `evaluate_predictions` in
training, the Arrow adapter `aggregate` and `study_table` in screening), no Ray.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from mura_core.metrics import evaluate_predictions
from mura_core.model_info import ModelInfo
from mura_core.studies import Predictions
from pipelines.registry.model_store import ResolvedModel
from pipelines.screen.models import ScreeningModel
from pipelines.screen.studies import aggregate, study_table

PARTS = ("XR_FINGER", "XR_HAND", "XR_WRIST")


def _images(rng: np.random.Generator, studies: int = 300) -> dict[str, np.ndarray]:
    """Image rows in image order: 1-5 images a study, a study's label on all its images
    (a few studies unlabelled), one probability an image; some land on a threshold."""
    count = rng.integers(1, 6, studies)
    study = np.repeat(np.arange(studies), count)
    label = np.where(study % 11 == 0, np.nan, (study % 3 == 0).astype(float))
    prob = rng.random(len(study))
    prob[::17] = 0.5  # single-image studies among them sit exactly at a threshold
    return {
        "image_id": np.array([f"i{i:05d}" for i in range(len(study))], dtype=object),
        "study_key": np.array([f"st-{s:04d}" for s in study], dtype=object),
        "patient_key": np.array([f"pt-{s // 2:04d}" for s in study], dtype=object),
        "body_part": np.array([PARTS[s % 3] for s in study], dtype=object),
        "label": label,
        "split": np.array(["test"] * len(study), dtype=object),
        "prob": prob,
    }


def _screened(images: dict[str, np.ndarray], info: ModelInfo) -> pa.Table:
    table = pa.table(
        {
            **{
                k: pa.array(v.tolist(), pa.string())
                for k, v in images.items()
                if k not in ("label", "prob")
            },
            "label": pa.array(
                [None if np.isnan(v) else int(v) for v in images["label"]], pa.int8()
            ),
            "prob": pa.array(images["prob"], pa.float64()),
        }
    )
    model = ScreeningModel(Path("."), info, (ResolvedModel(Path("."), info, "bundle"),))
    point = info.operating_point()
    return study_table(aggregate(table), point, model, "now")


def test_training_and_screening_give_the_same_study_rows_for_the_same_images() -> None:
    images = _images(np.random.default_rng(7))
    info = ModelInfo(
        "cnn", 32, (0.5,) * 3, (0.25,) * 3, threshold=0.5, part_thresholds={"XR_FINGER": 0.4}
    )
    trained = Predictions.from_columns(images).studies()
    screened = _screened(images, info).sort_by("study_key").to_pydict()
    assert screened["study_key"] == trained.keys.tolist()
    assert screened["patient_key"] == trained.patient_key.tolist()
    assert screened["body_part"] == trained.body_part.tolist()
    assert screened["images"] == trained.images.tolist()
    assert screened["mean_prob"] == trained.prob.tolist()  # bit for bit
    assert screened["max_prob"] == trained.max_prob.tolist()
    assert screened["label"] == [None if v < 0 else v for v in trained.label.tolist()]
    decided = info.operating_point().flag(trained.prob, trained.body_part)
    assert screened["flagged"] == decided.tolist()
    assert 0 < sum(decided) < len(decided)
    at = trained.prob == np.array([info.threshold_for(p) for p in trained.body_part])
    assert at.any() and not decided[at].any()  # at the threshold: not flagged


def test_training_study_metrics_count_the_flags_screening_reports() -> None:
    images = _images(np.random.default_rng(8))
    info = ModelInfo(
        "cnn", 32, (0.5,) * 3, (0.25,) * 3, threshold=0.55, part_thresholds={"XR_HAND": 0.45}
    )
    evaluation = evaluate_predictions(
        Predictions.from_columns(images), info.threshold, part_thresholds=info.part_thresholds
    )
    rows = _screened(images, info).to_pydict()
    labelled = [
        (f, y) for f, y in zip(rows["flagged"], rows["label"], strict=True) if y is not None
    ]
    tn = sum(1 for f, y in labelled if not f and y == 0)
    fp = sum(1 for f, y in labelled if f and y == 0)
    fn = sum(1 for f, y in labelled if not f and y == 1)
    tp = sum(1 for f, y in labelled if f and y == 1)
    assert evaluation.study.confusion == [[tn, fp], [fn, tp]]
    assert list(rows["flagged"]) == sorted(rows["flagged"], reverse=True)  # flagged first
