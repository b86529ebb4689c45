"""A trained model's operating point, from its validation predictions.

`calibrated`: with `--calibrate`, a temperature fitted on val (study-level NLL) and every
split's probabilities as the calibrated model gives them. `operating_point`: the threshold
chosen on val images (`metrics.val_threshold`: the highest reaching `--target-sensitivity`;
else 0.5 for a class-weighted loss, Youden's J for an unweighted one), the collapse check (a
model whose outputs have no spread, or are all one side without ranking, is not
registered) and, with `--per-part-threshold`, one threshold per body part on val studies.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mura_core.calibration import fit_temperature
from mura_core.collapse import output_spread
from mura_core.decisions import PAPER_THRESHOLD, OperatingPoint
from mura_core.metrics import choose_part_thresholds, val_threshold
from mura_core.run_contract import VAL_LOGIT_STD, operating_tags
from mura_core.studies import Predictions
from pipelines.runtime.console import console
from pipelines.train.errors import TrainCollapsed, TrainError


def calibrated(predictions: dict[str, Predictions]) -> tuple[dict[str, Predictions], float]:
    """Temperature scaling fitted on the labelled validation images; every split's
    probabilities as the calibrated model gives them, and the temperature."""
    val = predictions["val"].where(predictions["val"].label >= 0)
    try:
        temperature = fit_temperature(val.label, val.prob, groups=val.study_key)
    except ValueError as exc:
        raise TrainError(f"--calibrate: {exc}") from None
    point = OperatingPoint(temperature=temperature)
    scaled = {
        split: dataclasses.replace(pred, prob=point.calibrated(pred.prob))
        for split, pred in predictions.items()
    }
    return scaled, point.temperature


def operating_point(
    val: Predictions,
    target_sensitivity: float | None,
    per_part: bool,
    weighted_loss: bool,
    client: Any,
    run_id: str,
) -> tuple[float, dict[str, float]]:
    """The threshold chosen on val images (`val_threshold`) and, with --per-part-threshold,
    one per body part on val studies; a collapsed model raises."""
    val = val.where(val.label >= 0)
    threshold, rule = PAPER_THRESHOLD, None
    if np.isfinite(val.prob).all():  # a diverged model's NaNs: collapsed, nothing to choose
        chosen = val_threshold(
            val.label.tolist(),
            val.prob.tolist(),
            target_sensitivity=target_sensitivity,
            weighted_loss=weighted_loss,
        )
        threshold, rule = chosen.value, chosen.rule
    spread = output_spread(val.prob, val.label, PAPER_THRESHOLD)
    client.log_metric(run_id, VAL_LOGIT_STD, spread.logit_std)
    for key, value in operating_tags(rule, spread.collapsed).items():
        client.set_tag(run_id, key, value)
    if spread.collapsed:  # the per-epoch curves are in the run already; nothing else to log
        raise TrainCollapsed(
            f"training collapsed: the chosen model's {spread.describe()} on the "
            f"{spread.images} validation images, so nothing was registered (MLflow run "
            f"{run_id} holds its curves); try a lower --lr, more epochs or another --seed"
        )
    if not per_part or target_sensitivity is None:
        return threshold, {}
    studies = val.studies()
    chosen, notes = choose_part_thresholds(
        studies.label, studies.prob, studies.body_part, target_sensitivity
    )
    for note in notes:
        console.print(f"[train] per-part threshold: {note}")
    return threshold, chosen
