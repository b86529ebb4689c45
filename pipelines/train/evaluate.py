"""`mura evaluate`: re-run evaluation of a registered / logged model (or bundle) on any shards."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mura_core.errors import ConfigError
from mura_core.metrics import Evaluation, evaluate_predictions
from pipelines.registry.model_store import ResolvedModel, scoring_model
from pipelines.registry.tracking import check_tracking, resolve_tracking_uri, use_tracking
from pipelines.runtime.cluster import ensure_ray
from pipelines.runtime.console import console
from pipelines.shards.predict import bundle_bytes, predict_splits
from pipelines.shards.shardsets import shard_stats


@dataclass(frozen=True)
class EvaluateResult:
    model: ResolvedModel
    threshold: float
    evaluations: dict[str, Evaluation]


def run_evaluation(
    model_spec: str,
    shards: Path,
    *,
    splits: tuple[str, ...] = ("test",),
    body_part: str | None = None,
    threshold: float | None = None,
    tracking_uri: str | None = None,
    address: str | None = None,
    seed: int = 0,
) -> EvaluateResult:
    """Score `splits` of `shards` with the model and compute the paper's metrics."""
    stats = shard_stats(shards.expanduser().resolve())
    for split in splits:
        if stats.images(split, body_part) == 0:
            raise ConfigError(
                f"split {split!r}"
                + (f" / {body_part}" if body_part else "")
                + f" of {shards} holds no image"
            )
    uri = resolve_tracking_uri(tracking_uri)
    if model_spec.startswith(("models:", "runs:", "@")):
        check_tracking(uri)
        use_tracking(uri)
    model = scoring_model(model_spec)
    if model.info.size > stats.size:
        console.print(
            f"note: the model's input size {model.info.size} is larger than the shards' "
            f"{stats.size}: images are upsampled"
        )
    point = model.info.operating_point(threshold)  # --threshold replaces every part's
    ensure_ray(address)
    predictions = predict_splits(
        shards.expanduser().resolve(), splits, bundle_bytes(model.folder), body_part=body_part
    )
    evaluations = {
        split: evaluate_predictions(
            pred, point.threshold, seed=seed, part_thresholds=point.part_thresholds
        )
        for split, pred in predictions.items()
    }
    return EvaluateResult(model, point.threshold, evaluations)
