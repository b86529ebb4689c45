"""After the fit: the best checkpoint(s) made one model, decided on val, evaluated, registered.

The recipe, top to bottom: the `keep_best` best-val-loss checkpoints, copied locally, best
first (`_best_bundles`), saved as one bundle (an ensemble when the recipe keeps several),
with the run's per-epoch history (`_final_bundle`) → train/val/test scored with Ray Data →
how the model decides, chosen on val (`_decide`: the temperature with `--calibrate`, then
the threshold(s); a collapsed model raises `TrainCollapsed` here, before anything is
registered) → every split evaluated at study level → the model's `model.json` written,
with its origin (run, body part, ensemble size, shard size, initial weights) → the
validation reference (monitoring's baseline), metrics, plots, tables, CAMs logged → the
model logged and registered (`TrainResult`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray.train

from mura_core.checkpoints import load_bundle, read_history, save_models, write_info
from mura_core.model_info import ModelInfo, ModelOrigin
from mura_core.run_contract import EpochReport
from mura_core.studies import Predictions
from pipelines.shards.predict import bundle_bytes, predict_splits
from pipelines.train.config import SPLITS, TrainConfig
from pipelines.train.errors import TrainError
from pipelines.train.evaluation import (
    SplitResult,
    evaluate_splits,
    log_calibration,
    log_evaluation,
    log_model,
    log_reference,
    validation_reference,
)
from pipelines.train.operating import calibrated, operating_point
from pipelines.train.prepare import Checked


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    experiment_id: str
    model_uri: str
    registered_name: str
    version: str | None
    threshold: float
    splits: dict[str, SplitResult]
    history: list[EpochReport]
    tracking_uri: str
    weights: str  # the initial weights, as logged: "none (random init)", "imagenet (...)", ...


def _best_bundles(result: ray.train.Result, keep: int, into: Path) -> list[Path]:
    """The `keep` best-val-loss checkpoints, copied to local folders, best first."""
    reported = [(c, EpochReport.from_dict(m)) for c, m in result.best_checkpoints]
    ranked = sorted(
        ((c, r) for c, r in reported if r.val_loss is not None), key=lambda c: c[1].val_loss
    )
    if not ranked and result.checkpoint is not None:
        ranked = [(result.checkpoint, EpochReport.from_dict(result.metrics or {}))]
    folders = []
    for i, (checkpoint, _report) in enumerate(ranked[:keep]):
        folders.append(Path(checkpoint.to_directory(str(into / f"ckpt{i}"))))
    if not folders:
        raise TrainError("training reported no checkpoint")
    return folders


def _final_bundle(
    cfg: TrainConfig, result: ray.train.Result, tmp: Path
) -> tuple[Path, int, list[EpochReport]]:
    """The best checkpoint(s) as one bundle (an ensemble when the recipe keeps several),
    how many models it holds, and the run's per-epoch history."""
    folders = _best_bundles(result, cfg.recipe.keep_best, tmp)
    latest = result.checkpoint
    history_dir = Path(latest.to_directory(str(tmp / "latest"))) if latest else folders[0]
    models = [load_bundle(f)[0] for f in folders]
    final = save_models(tmp / "bundle", models, ModelInfo.from_recipe(cfg.recipe))
    return final, len(models), read_history(history_dir)


def _decide(
    cfg: TrainConfig, predictions: dict[str, Predictions], client: Any, run_id: str
) -> tuple[dict[str, Predictions], ModelInfo]:
    """How the model decides, chosen on val: the temperature (`--calibrate`; the splits'
    probabilities as the calibrated model gives them), the threshold(s); a collapsed model
    raises (`operating_point`)."""
    temperature = 1.0
    if cfg.calibrate:
        scaled, temperature = calibrated(predictions)
        log_calibration(client, run_id, predictions, temperature)
        predictions = scaled
    threshold, part_thresholds = operating_point(
        predictions["val"],
        cfg.target_sensitivity,
        cfg.per_part_threshold,
        cfg.recipe.weighted_loss,
        client,
        run_id,
    )
    info = ModelInfo.from_recipe(
        cfg.recipe,
        threshold=threshold,
        temperature=temperature,
        part_thresholds=part_thresholds or None,
    )
    return predictions, info


def finish(
    cfg: TrainConfig,
    result: ray.train.Result,
    tmp: Path,
    checked: Checked,
    client: Any,
    run_id: str,
) -> TrainResult:
    """Rebuild the best model(s), evaluate every split, log artifacts; unless the model has
    collapsed, log and register it."""
    shards = cfg.shards.expanduser().resolve()
    final, members, history = _final_bundle(cfg, result, tmp)
    predictions = predict_splits(shards, SPLITS, bundle_bytes(final), body_part=cfg.body_part)
    predictions, info = _decide(cfg, predictions, client, run_id)
    info = replace(
        info,
        extra=ModelOrigin(
            run_id=run_id,
            body_part=cfg.body_part or "all",
            ensemble_size=members,
            shard_size=checked.stats.size,
            weights=checked.weights.label,
        ),
    )
    threshold, part_thresholds = info.threshold, info.part_thresholds or {}
    splits = evaluate_splits(predictions, threshold, seed=cfg.seed, part_thresholds=part_thresholds)
    write_info(final, info)
    reference = validation_reference(shards, predictions["val"], info, cfg.body_part)
    log_reference(client, run_id, final, reference)
    log_evaluation(
        client=client,
        run_id=run_id,
        bundle_dir=final,
        splits=splits,
        history=history,
        predictions=predictions,
        shards=shards,
        cam_examples=cfg.cam_examples,
    )
    model_uri, version = log_model(
        uri=checked.uri,
        run_id=run_id,
        bundle_dir=final,
        registered_name=cfg.registered_name,
        body_part=cfg.body_part,
        seed=cfg.seed,
    )
    return TrainResult(
        run_id=run_id,
        experiment_id=client.get_run(run_id).info.experiment_id,
        model_uri=model_uri,
        registered_name=cfg.registered_name,
        version=version,
        threshold=threshold,
        splits=splits,
        history=history,
        tracking_uri=checked.uri,
        weights=checked.weights.label,
    )
