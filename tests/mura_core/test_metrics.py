"""Metrics against hand-computed values on small fixed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from mura_core.metrics import (
    binary_metrics,
    bootstrap_kappa_ci,
    choose_threshold,
    cohen_kappa,
    evaluate,
    flatten,
    table_rows,
)
from mura_core.studies import aggregate


def test_kappa_by_hand() -> None:
    # tp=2 fp=1 fn=1 tn=2: p_o = 4/6, p_e = (3*3 + 3*3)/36 = 1/2, kappa = (2/3 - 1/2)/(1/2) = 1/3
    y = [1, 1, 0, 0, 1, 0]
    pred = [1, 0, 0, 0, 1, 1]
    assert cohen_kappa(np.array(y), np.array(pred)) == pytest.approx(1 / 3)
    assert cohen_kappa(np.array(y), np.array(pred)) == pytest.approx(cohen_kappa_score(y, pred))
    assert cohen_kappa(np.array([1, 0, 1]), np.array([1, 0, 1])) == pytest.approx(1.0)
    assert math.isnan(cohen_kappa(np.array([1, 1]), np.array([1, 1])))


def test_auroc_sensitivity_specificity_by_hand() -> None:
    # pairs (pos, neg): (0.35>0.1) (0.35<0.4) (0.8>0.1) (0.8>0.4) → 3/4
    m = binary_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.5)
    assert m.auroc == pytest.approx(0.75)
    assert m.confusion == [[2, 0], [1, 1]]
    assert m.sensitivity == pytest.approx(0.5) and m.specificity == pytest.approx(1.0)
    assert m.accuracy == pytest.approx(0.75)
    assert m.confusion_normalized == [[1.0, 0.0], [0.5, 0.5]]


def test_study_probability_is_the_mean_of_its_images() -> None:
    st = aggregate(
        ["b", "a", "a", "c", "c", "c"],
        [0.9, 0.2, 0.6, 0.1, 0.2, 0.6],
        [1, 0, 0, None, None, None],
        ["XR_HAND"] * 6,
    )
    assert list(st.keys) == ["a", "b", "c"]
    assert st.prob == pytest.approx([0.4, 0.9, 0.3])
    assert st.max_prob == pytest.approx([0.6, 0.9, 0.6])
    assert list(st.images) == [2, 1, 3] and list(st.label) == [0, 1, -1]


def test_single_class_auroc_is_undefined_not_a_crash() -> None:
    m = binary_metrics([1, 1, 1], [0.2, 0.7, 0.9], 0.5)
    assert m.auroc is None and any("AUROC undefined" in n for n in m.notes)
    assert m.sensitivity == pytest.approx(2 / 3) and m.specificity is None
    flat = flatten(
        evaluate(["s1", "s2", "s3"], [0.2, 0.7, 0.9], [1, 1, 1], ["XR_HAND"] * 3, 0.5), "test"
    )
    assert "test.study.auroc" not in flat and "test.study.sensitivity" in flat


def test_bootstrap_ci_is_seeded_and_brackets_the_estimate() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    pred = np.where(rng.random(300) < 0.8, y, 1 - y)
    groups = np.repeat(np.arange(100), 3)
    ci = bootstrap_kappa_ci(y, pred, groups, seed=3)
    assert ci == bootstrap_kappa_ci(y, pred, groups, seed=3)
    assert ci[0] < cohen_kappa(y, pred) < ci[1]
    assert ci[1] - ci[0] < 0.3


def test_threshold_for_a_target_sensitivity() -> None:
    y, p = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    assert choose_threshold(y, p, None) == 0.5
    t = choose_threshold(y, p, 1.0)
    assert 0.1 < t < 0.35 and binary_metrics(y, p, t).sensitivity == 1.0
    t_half = choose_threshold(y, p, 0.5)
    assert binary_metrics(y, p, t_half).sensitivity == 0.5 and t_half < 0.8
    with pytest.raises(ValueError, match="single class"):
        choose_threshold([1, 1], [0.2, 0.3], 0.9)


def test_evaluate_per_body_part_and_flat_names() -> None:
    keys = ["w1", "w1", "w2", "h1", "h2"]
    probs = [0.9, 0.7, 0.1, 0.6, 0.2]
    labels = [1, 1, 0, 1, None]
    parts = ["XR_WRIST", "XR_WRIST", "XR_WRIST", "XR_HAND", "XR_HAND"]
    ev = evaluate(keys, probs, labels, parts, 0.5)
    assert ev.study.n == 3 and ev.image.n == 4  # the unlabelled image is left out
    assert ev.study_by_part["XR_WRIST"].kappa == pytest.approx(1.0)
    flat = flatten(ev, "test")
    assert flat["test.study.kappa.XR_WRIST"] == pytest.approx(1.0)
    assert flat["test.threshold"] == 0.5
    rows = table_rows(ev)
    assert [r["body part"] for r in rows] == ["XR_HAND", "XR_WRIST", "overall"]
