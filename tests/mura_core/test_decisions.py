"""The one study decision (mura_core.decisions): aggregation, label, threshold, temperature."""

from __future__ import annotations

import numpy as np
import pytest

from mura_core.calibration import apply_temperature
from mura_core.decisions import (
    PAPER_THRESHOLD,
    OperatingPoint,
    aggregate,
    flagged,
    label_from_range,
    study_label,
    threshold_including,
)
from mura_core.model_info import ModelInfo


def test_a_study_is_the_mean_of_its_images_sorted_by_key_whatever_their_order() -> None:
    st = aggregate(
        ["s2", "s1", "s2", "s3", "s1"],
        [0.9, 0.2, 0.3, 0.7, 0.4],
        [1, 0, 1, None, 0],
        ["XR_HAND", "XR_WRIST", "XR_HAND", "XR_ELBOW", "XR_WRIST"],
        ["p2", "p1", "p2", "p3", "p1"],
    )
    assert st.keys.tolist() == ["s1", "s2", "s3"]
    np.testing.assert_allclose(st.prob, [0.3, 0.6, 0.7])
    np.testing.assert_allclose(st.max_prob, [0.4, 0.9, 0.7])
    assert st.images.tolist() == [2, 2, 1]
    assert st.label.tolist() == [0, 1, -1]
    assert st.body_part.tolist() == ["XR_WRIST", "XR_HAND", "XR_ELBOW"]
    assert st.patient_key.tolist() == ["p1", "p2", "p3"]


def test_a_study_keeps_one_body_part_a_mura_one_before_a_named_one_or_other() -> None:
    """An image whose header names no part (OTHER) does not split a wrist study in two."""
    st = aggregate(["s"] * 3, [0.1, 0.2, 0.3], [1, 1, 1], ["OTHER", "XR_WRIST", "lower_leg"])
    assert st.keys.tolist() == ["s"] and st.body_part.tolist() == ["XR_WRIST"]
    assert st.images.tolist() == [3] and st.patient_key.tolist() == [None]


def test_no_images_are_no_studies_and_columns_must_have_one_length() -> None:
    st = aggregate([], [], [], [])
    assert len(st.keys) == len(st.prob) == len(st.label) == len(st.body_part) == 0
    with pytest.raises(ValueError, match="differ in length"):
        aggregate(["s1"], [0.1, 0.2], [1], ["XR_HAND"])


def test_a_study_label_is_the_one_its_labelled_images_agree_on() -> None:
    # agree, disagree, none known, one known beside an unknown
    lowest, highest = np.array([1, 0, 2, 0]), np.array([1, 1, -1, 0])
    assert label_from_range(lowest, highest).tolist() == [1, -1, -1, 0]
    assert study_label([1, 1, None]) == 1 and study_label([0, None]) == 0
    assert study_label([0, 1]) is None  # a conflict is unlabelled, not "any abnormal"
    assert study_label([None, None]) is None and study_label([]) is None
    st = aggregate(["a", "a", "b", "b"], [0.1] * 4, [0, 1, -1, 1], ["XR_HAND"] * 4)
    assert st.label.tolist() == [-1, 1]


def test_flagged_means_strictly_above_the_threshold() -> None:
    assert not flagged(0.5, 0.5) and flagged(np.nextafter(0.5, 1.0), 0.5)
    assert flagged([0.2, 0.5, 0.8], 0.5).tolist() == [False, False, True]
    assert OperatingPoint().threshold == PAPER_THRESHOLD == 0.5
    assert OperatingPoint(0.5).flag([0.5, 0.51], None).tolist() == [False, True]


def test_threshold_including_flags_exactly_the_probabilities_at_or_above_a_cut() -> None:
    p = np.array([0.1, 0.3, 0.3, 0.7, 1.0])
    assert flagged(p, threshold_including(0.3)).tolist() == [False, True, True, True, True]
    assert flagged(p, threshold_including(1.0)).tolist() == [False] * 4 + [True]
    assert threshold_including(np.inf) < 1.0  # roc_curve's first cut: nothing above 1


def test_each_study_is_decided_at_its_body_part_threshold_else_the_models() -> None:
    point = OperatingPoint(0.5, {"XR_FINGER": 0.3})
    parts = np.array(["XR_FINGER", "XR_WRIST", "XR_FINGER", "OTHER"], dtype=object)
    assert point.thresholds(parts).tolist() == [0.3, 0.5, 0.3, 0.5]
    assert point.flag([0.4, 0.4, 0.3, 0.6], parts).tolist() == [True, False, False, True]
    assert point.threshold_for(None) == 0.5 and point.threshold_for("XR_FINGER") == 0.3
    assert point.thresholds([]).shape == (0,)


def test_the_model_info_gives_its_operating_point_and_a_given_threshold_replaces_all() -> None:
    info = ModelInfo(
        "cnn",
        32,
        (0.5,) * 3,
        (0.25,) * 3,
        threshold=0.42,
        temperature=2.5,
        part_thresholds={"XR_FINGER": 0.31},
    )
    assert info.operating_point() == OperatingPoint(0.42, {"XR_FINGER": 0.31}, 2.5)
    assert info.threshold_for("XR_FINGER") == 0.31 and info.threshold_for("XR_HAND") == 0.42
    override = info.operating_point(0.7)
    assert override.part_thresholds == {} and override.threshold_for("XR_FINGER") == 0.7
    assert override.temperature == 2.5


def test_the_temperature_calibrates_raw_probabilities_as_the_model_would() -> None:
    p = np.array([0.05, 0.3, 0.5, 0.8, 0.99])
    np.testing.assert_allclose(OperatingPoint().calibrated(p), p, atol=1e-12)  # T = 1
    hot = OperatingPoint(temperature=2.0).calibrated(p)
    np.testing.assert_array_equal(hot, apply_temperature(p, 2.0))
    assert (np.abs(hot - 0.5) <= np.abs(p - 0.5)).all() and hot[2] == pytest.approx(0.5)
