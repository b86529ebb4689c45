"""Predictions, the shape image scores travel in from batch inference to evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from mura_core.metrics import evaluate, evaluate_predictions
from mura_core.studies import Predictions


def _columns() -> dict[str, np.ndarray]:
    """What a predictor's pandas frame gives: labels as floats with NaN where unknown."""
    return {
        "image_id": np.array(["i1", "i2", "i3", "i4", "i5"], dtype=object),
        "study_key": np.array(["s1", "s1", "s2", "s3", "s3"], dtype=object),
        "patient_key": np.array(["p1", "p1", "p2", "p3", "p3"], dtype=object),
        "body_part": np.array(["XR_HAND"] * 3 + ["XR_WRIST"] * 2, dtype=object),
        "label": np.array([1.0, 1.0, 0.0, np.nan, np.nan]),
        "split": np.array(["val", "val", "val", "test", "test"], dtype=object),
        "prob": np.array([0.9, 0.7, 0.2, 0.4, 0.6]),
        "view": np.array(["PA"] * 5, dtype=object),  # extra columns are ignored
    }


def test_from_columns_types_labels_and_splits_by_mask() -> None:
    pred = Predictions.from_columns(_columns())
    assert len(pred) == 5 and pred.label.dtype == np.int64
    assert pred.label.tolist() == [1, 1, 0, -1, -1]
    assert pred.labels() == [1, 1, 0, None, None]
    val = pred.where(pred.split == "val")
    assert val.image_id.tolist() == ["i1", "i2", "i3"] and len(val.prob) == 3
    studies = pred.studies()
    assert studies.keys.tolist() == ["s1", "s2", "s3"]
    np.testing.assert_allclose(studies.prob, [0.8, 0.2, 0.5])
    assert studies.label.tolist() == [1, 0, -1]


def test_no_rows_may_come_without_columns_but_rows_need_them_all() -> None:
    empty = Predictions.from_columns({})
    assert len(empty) == 0 and empty.labels() == []
    partial = {k: v for k, v in _columns().items() if k != "study_key"}
    with pytest.raises(KeyError, match="study_key"):
        Predictions.from_columns(partial)
    with pytest.raises(ValueError, match="differ in length"):
        Predictions.from_columns({**_columns(), "split": np.array(["val"], dtype=object)})


def test_evaluate_predictions_is_evaluate_on_the_columns() -> None:
    pred = Predictions.from_columns(_columns())
    got = evaluate_predictions(pred, 0.5)
    want = evaluate(list(pred.study_key), list(pred.prob), pred.labels(), list(pred.body_part), 0.5)
    assert got == want and got.image.n == 3
