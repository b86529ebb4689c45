"""Image- and study-level metrics, overall and per body part, in the MURA paper's shape.

scikit-learn computes AUROC and the confusion matrix; Cohen's kappa has a small vectorized
implementation so its 95 % confidence interval can bootstrap over studies (images of one
study are not independent) 1,000 times in milliseconds. Undefined values (AUROC of a
single-class split) are reported as None with a note, never as a crash or a fake number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from mura_core.body_parts import part_order
from mura_core.decisions import (
    PAPER_THRESHOLD,
    OperatingPoint,
    aggregate,
    flagged,
    threshold_including,
)
from mura_core.errors import ConfigError
from mura_core.studies import Predictions

N_BOOTSTRAP = 1000


def kappa_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, tn: np.ndarray) -> np.ndarray:
    """Cohen's kappa of 2×2 tables (vectorized); NaN where chance agreement is total."""
    n = tp + fp + fn + tn
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = (tp + tn) / n
        expected = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / (n * n)
        return np.where(expected < 1.0, (observed - expected) / (1.0 - expected), np.nan)


def cohen_kappa(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    tp, fp = np.sum(y_true & y_pred), np.sum(~y_true & y_pred)
    fn, tn = np.sum(y_true & ~y_pred), np.sum(~y_true & ~y_pred)
    return float(kappa_from_counts(np.array(tp), np.array(fp), np.array(fn), np.array(tn)))


def bootstrap_kappa_ci(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    groups: np.ndarray,
    *,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile CI of kappa, resampling whole groups (studies) with replacement."""
    y_true, y_pred = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    _, group_idx = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    n_groups = int(group_idx.max()) + 1 if len(group_idx) else 0
    if n_groups < 2:
        return None
    # per-group 2×2 counts; a bootstrap sample is a weighted sum of them
    counts = np.zeros((n_groups, 4))
    np.add.at(counts, (group_idx, 0), y_true & y_pred)
    np.add.at(counts, (group_idx, 1), ~y_true & y_pred)
    np.add.at(counts, (group_idx, 2), y_true & ~y_pred)
    np.add.at(counts, (group_idx, 3), ~y_true & ~y_pred)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    weights = np.zeros((n_boot, n_groups))
    np.add.at(weights, (np.repeat(np.arange(n_boot), n_groups), draws.ravel()), 1.0)
    sampled = weights @ counts
    kappas = kappa_from_counts(*sampled.T)
    kappas = kappas[np.isfinite(kappas)]
    if kappas.size < n_boot // 2:
        return None
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(kappas, alpha)), float(np.quantile(kappas, 1.0 - alpha))


@dataclass(frozen=True)
class BinaryMetrics:
    """One row of the results table. None = undefined, with the reason in `notes`."""

    n: int
    positives: int
    accuracy: float | None
    auroc: float | None
    kappa: float | None
    kappa_ci: tuple[float, float] | None
    sensitivity: float | None
    specificity: float | None
    confusion: list[list[int]]  # [[tn, fp], [fn, tp]]
    confusion_normalized: list[list[float | None]]
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bootstrap_auroc_ci(
    y_true: Sequence[int],
    prob: Sequence[float],
    *,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile CI of AUROC over `n_boot` resamples of the samples (studies: aggregate
    first); resamples holding one class are skipped; None when fewer than half are left."""
    y, p = np.asarray(y_true, dtype=np.int64), np.asarray(prob, dtype=np.float64)
    if len(np.unique(y)) < 2:
        return None
    rng = np.random.default_rng(seed)
    scores = []
    for draw in rng.integers(0, len(y), size=(n_boot, len(y))):
        if y[draw].min() != y[draw].max():
            scores.append(roc_auc_score(y[draw], p[draw]))
    if len(scores) < n_boot // 2:
        return None
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(scores, alpha)), float(np.quantile(scores, 1.0 - alpha))


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def binary_metrics(
    y_true: Sequence[int],
    prob: Sequence[float],
    threshold: float | np.ndarray,
    *,
    groups: Sequence[str] | None = None,
    seed: int = 0,
) -> BinaryMetrics:
    """Accuracy, AUROC, kappa (+ bootstrap CI over `groups`), sensitivity, specificity."""
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(prob, dtype=np.float64)
    notes: list[str] = []
    if y.size == 0:
        return BinaryMetrics(
            0,
            0,
            None,
            None,
            None,
            None,
            None,
            None,
            [[0, 0], [0, 0]],
            [[None, None], [None, None]],
            ("no labelled samples",),
        )
    pred = flagged(p, threshold).astype(np.int64)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel().tolist()
    if len(np.unique(y)) < 2:
        auroc = None
        notes.append(f"AUROC undefined: only class {int(y[0])} present")
    else:
        auroc = float(roc_auc_score(y, p))
    kappa = cohen_kappa(y, pred)
    if math.isnan(kappa):
        notes.append("kappa undefined: truth and prediction are one same class")
    ci = bootstrap_kappa_ci(
        y, pred, np.asarray(groups if groups is not None else np.arange(y.size)), seed=seed
    )
    row_sums = [tn + fp, fn + tp]
    normalized = [
        [_ratio(tn, row_sums[0]), _ratio(fp, row_sums[0])],
        [_ratio(fn, row_sums[1]), _ratio(tp, row_sums[1])],
    ]
    return BinaryMetrics(
        n=int(y.size),
        positives=int(y.sum()),
        accuracy=float((pred == y).mean()),
        auroc=auroc,
        kappa=None if math.isnan(kappa) else kappa,
        kappa_ci=ci,
        sensitivity=_ratio(tp, tp + fn),
        specificity=_ratio(tn, tn + fp),
        confusion=[[tn, fp], [fn, tp]],
        confusion_normalized=normalized,
        notes=tuple(notes),
    )


def choose_threshold(
    y_true: Sequence[int], prob: Sequence[float], target_sensitivity: float | None
) -> float:
    """0.5 (the paper) when no target; else the highest threshold reaching the target
    sensitivity on these (validation) samples."""
    if target_sensitivity is None:
        return PAPER_THRESHOLD
    if not 0.0 < target_sensitivity <= 1.0:
        raise ConfigError(f"target sensitivity must be in (0, 1], got {target_sensitivity}")
    y = np.asarray(y_true, dtype=np.int64)
    if len(np.unique(y)) < 2:
        raise ConfigError(
            "cannot choose a threshold for a target sensitivity: the validation "
            "split has a single class"
        )
    fpr, tpr, thresholds = roc_curve(y, np.asarray(prob, dtype=np.float64))
    ok = np.flatnonzero(tpr >= target_sensitivity)
    return threshold_including(thresholds[ok[0]])  # roc_curve's cuts are inclusive (p >= t)


@dataclass(frozen=True)
class OperatingThreshold:
    """The threshold a trained model carries, and the rule that chose it (logged)."""

    value: float
    rule: str


def val_threshold(
    y_true: Sequence[int],
    prob: Sequence[float],
    *,
    target_sensitivity: float | None,
    weighted_loss: bool,
) -> OperatingThreshold:
    """The operating threshold chosen on validation images.

    A target sensitivity: the highest threshold reaching it (`choose_threshold`). Otherwise
    the papers' 0.5 where the loss is class-weighted (its outputs are balanced around 0.5,
    as in mura-paper); with an unweighted loss on imbalanced data 0.5 may leave every image
    on one side, so the threshold maximizing Youden's J (sensitivity + specificity − 1) on
    val is chosen — 0.5 when val has a single class.
    """
    if target_sensitivity is not None:
        chosen = choose_threshold(y_true, prob, target_sensitivity)
        return OperatingThreshold(chosen, f"sensitivity >= {target_sensitivity:g} on val")
    y = np.asarray(y_true, dtype=np.int64)
    if weighted_loss or len(np.unique(y)) < 2:
        why = "class-weighted loss" if weighted_loss else "val has a single class"
        return OperatingThreshold(PAPER_THRESHOLD, f"0.5 ({why})")
    fpr, tpr, thresholds = roc_curve(y, np.asarray(prob, dtype=np.float64))
    best = int(np.argmax(tpr - fpr))
    chosen = threshold_including(thresholds[best])  # roc_curve's cuts are inclusive (p >= t)
    return OperatingThreshold(chosen, "Youden's J on val (unweighted loss)")


def choose_part_thresholds(
    study_labels: Sequence[int],
    study_probs: Sequence[float],
    body_parts: Sequence[str],
    target_sensitivity: float,
) -> tuple[dict[str, float], list[str]]:
    """One threshold per body part, each the highest reaching the target sensitivity on its
    own (validation) studies; a part with a single class keeps the overall threshold (said
    in the notes returned)."""
    y = np.asarray(study_labels, dtype=np.int64)
    p = np.asarray(study_probs, dtype=np.float64)
    parts = np.asarray(body_parts, dtype=object)
    chosen, notes = {}, []
    for part in part_order(parts.tolist()):
        m = parts == part
        if len(np.unique(y[m])) < 2:
            notes.append(f"{part}: one class in val, the overall threshold applies")
            continue
        chosen[part] = choose_threshold(y[m].tolist(), p[m].tolist(), target_sensitivity)
    return chosen, notes


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one split at one threshold (or one per body part where `part_thresholds`
    names it): image and study level, overall and per part."""

    threshold: float
    image: BinaryMetrics
    study: BinaryMetrics
    image_by_part: dict[str, BinaryMetrics] = field(default_factory=dict)
    study_by_part: dict[str, BinaryMetrics] = field(default_factory=dict)
    part_thresholds: dict[str, float] = field(default_factory=dict)


def evaluate(
    study_keys: Sequence[str],
    probs: Sequence[float],
    labels: Sequence[int | None],
    body_parts: Sequence[str],
    threshold: float,
    *,
    seed: int = 0,
    part_thresholds: Mapping[str, float] | None = None,
) -> Evaluation:
    """Score labelled images and their studies (`decisions`: study prob = mean of its
    images'), each at its body part's threshold when `part_thresholds` names it, else at
    `threshold`."""
    keep = np.array([v is not None for v in labels], dtype=bool)
    keys = np.asarray(study_keys, dtype=object)[keep]
    p = np.asarray(probs, dtype=np.float64)[keep]
    y = np.array([int(v) for v in np.asarray(labels, dtype=object)[keep]], dtype=np.int64)
    parts = np.asarray(body_parts, dtype=object)[keep]
    studies = aggregate(keys, p, y, parts)
    point = OperatingPoint(threshold, part_thresholds or {})
    image = binary_metrics(y, p, point.thresholds(parts), groups=keys, seed=seed)
    study = binary_metrics(
        studies.label, studies.prob, point.thresholds(studies.body_part), seed=seed
    )
    image_by, study_by = {}, {}
    for part in part_order(parts.tolist()):
        m, t = parts == part, point.threshold_for(part)
        image_by[part] = binary_metrics(y[m], p[m], t, groups=keys[m], seed=seed)
        s = studies.body_part == part
        study_by[part] = binary_metrics(studies.label[s], studies.prob[s], t, seed=seed)
    return Evaluation(threshold, image, study, image_by, study_by, dict(point.part_thresholds))


def evaluate_predictions(
    pred: Predictions,
    threshold: float,
    *,
    seed: int = 0,
    part_thresholds: Mapping[str, float] | None = None,
) -> Evaluation:
    """`evaluate` of scored images (e.g. one split's predictions)."""
    return evaluate(
        list(pred.study_key),
        list(pred.prob),
        pred.labels(),
        list(pred.body_part),
        threshold,
        seed=seed,
        part_thresholds=part_thresholds,
    )


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table_rows(evaluation: Evaluation, level: str = "study") -> list[dict[str, str]]:
    """The MURA paper's table: one row per body part, then overall."""
    by_part = evaluation.study_by_part if level == "study" else evaluation.image_by_part
    overall = evaluation.study if level == "study" else evaluation.image
    rows = []
    for part, m in [*by_part.items(), ("overall", overall)]:
        ci = "" if m.kappa_ci is None else f" ({m.kappa_ci[0]:.3f}, {m.kappa_ci[1]:.3f})"
        rows.append(
            {
                "body part": part,
                "studies" if level == "study" else "images": str(m.n),
                "abnormal": str(m.positives),
                "kappa (95% CI)": _fmt(m.kappa) + ci,
                "AUROC": _fmt(m.auroc),
                "sensitivity": _fmt(m.sensitivity),
                "specificity": _fmt(m.specificity),
                "accuracy": _fmt(m.accuracy),
            }
        )
    return rows


def markdown_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return ""
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r[h] for h in head) + " |" for r in rows]
    return "\n".join(lines)


def text_table(rows: list[dict[str, str]]) -> str:
    """Fixed-width table for terminals."""
    if not rows:
        return ""
    head = list(rows[0])
    widths = [max(len(h), *(len(r[h]) for r in rows)) for h in head]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head)] + [fmt.format(*(r[h] for h in head)) for r in rows])
