"""Metrics against hand-computed values on small fixed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from mura_core.metrics import (
    binary_metrics,
    bootstrap_kappa_ci,
    choose_part_thresholds,
    choose_threshold,
    cohen_kappa,
    evaluate,
    table_rows,
)
from mura_core.run_contract import evaluation_metrics as flatten
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


def test_per_part_thresholds_reach_the_target_sensitivity_on_each_part() -> None:
    """MURA's study types differ widely: one threshold for all misses the target on the hard
    part; one per part reaches it on each (on the studies it was chosen on)."""
    rng = np.random.default_rng(4)
    parts, labels, probs = [], [], []
    for part, separation in (("XR_WRIST", 3.0), ("XR_FINGER", 0.6)):
        y = rng.integers(0, 2, 300)
        z = rng.normal(separation * (y - 0.5) + (0.0 if part == "XR_WRIST" else -1.0), 1.0)
        parts += [part] * 300
        labels += y.tolist()
        probs += (1 / (1 + np.exp(-z))).tolist()
    y, p, b = np.array(labels), np.array(probs), np.array(parts)
    overall = choose_threshold(y.tolist(), p.tolist(), 0.9)
    chosen, notes = choose_part_thresholds(y, p, b, 0.9)
    assert notes == [] and set(chosen) == {"XR_WRIST", "XR_FINGER"}
    finger = b == "XR_FINGER"
    assert np.mean(p[finger & (y == 1)] > overall) < 0.9  # the overall one misses fingers
    for part, t in chosen.items():
        m = (b == part) & (y == 1)
        assert np.mean(p[m] > t) >= 0.9, part
    keys = [f"s{i}" for i in range(len(y))]  # one image per study
    found = evaluate(keys, p.tolist(), y.tolist(), b.tolist(), overall, part_thresholds=chosen)
    assert found.study_by_part["XR_FINGER"].sensitivity >= 0.9
    assert found.part_thresholds == chosen
    expected = binary_metrics(y, p, np.where(finger, chosen["XR_FINGER"], chosen["XR_WRIST"]))
    assert found.study.sensitivity == expected.sensitivity
    assert flatten(found, "val")["val.threshold.XR_FINGER"] == chosen["XR_FINGER"]


def test_a_part_with_one_class_keeps_the_overall_threshold() -> None:
    chosen, notes = choose_part_thresholds(
        [1, 0, 1, 1], [0.9, 0.2, 0.7, 0.6], ["A", "A", "B", "B"], 0.9
    )
    assert set(chosen) == {"A"} and notes == ["B: one class in val, the overall threshold applies"]


def test_the_auroc_interval_holds_the_auroc_and_narrows_with_more_samples() -> None:
    from mura_core.metrics import bootstrap_auroc_ci

    rng = np.random.default_rng(0)
    widths = []
    for n in (100, 1600):
        y = (rng.random(n) < 0.2).astype(int)
        p = rng.normal(y * 1.0, 1.0)
        low, high = bootstrap_auroc_ci(y, p, n_boot=400)
        from sklearn.metrics import roc_auc_score

        assert low < roc_auc_score(y, p) < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2
    assert bootstrap_auroc_ci([1, 1, 1], [0.2, 0.3, 0.4]) is None
