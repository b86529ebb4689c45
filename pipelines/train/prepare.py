"""Before Ray or a worker starts: every whole-run check of a training run, as one-line errors.

The recipe, top to bottom: the shards' counts (`shard_stats`) → the body part present in
the training split → no empty split → both classes in the training split → the flags
(workers, target sensitivity; both classes in val when a sensitivity is asked; a per-part
threshold only with one) → the tracking store reachable → last, the initial weights (ImageNet
from the torch hub cache or downloaded, a file, or none — found, loaded once and checked: it
may download ~60 MB, not worth it before a cheap check fails). What they found: `Checked`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mura_core.initial_weights import InitialWeights
from pipelines.pretrain.weights import resolve_initial_weights
from pipelines.registry.tracking import check_tracking, resolve_tracking_uri
from pipelines.shards.shardsets import ShardStats, shard_stats
from pipelines.train.config import SPLITS, TrainConfig
from pipelines.train.errors import TrainError


@dataclass(frozen=True)
class Checked:
    """What the pre-flight checks found: shard counts, the tracking URI, initial weights."""

    stats: ShardStats
    uri: str
    weights: InitialWeights


def preflight(cfg: TrainConfig) -> Checked:
    """Every whole-run check, before Ray or a worker starts: raises one-line errors."""
    shards = cfg.shards.expanduser().resolve()
    stats = shard_stats(shards)
    if cfg.body_part is not None and stats.images("train", cfg.body_part) == 0:
        present = ", ".join(stats.body_parts("train")) or "none"
        raise TrainError(
            f"--body-part {cfg.body_part} matches no training image (training split has: {present})"
        )
    for split in SPLITS:
        if stats.images(split, cfg.body_part) == 0:
            raise TrainError(
                f"the {split} split is empty"
                + (f" for {cfg.body_part}" if cfg.body_part else "")
                + f" in {shards}: ingest with val/test fractions > 0"
            )
    train_labels = stats.labels("train", cfg.body_part)
    if train_labels.get(0, 0) == 0 or train_labels.get(1, 0) == 0:
        raise TrainError(
            f"the training split has a single class ({dict(train_labels)}): nothing to learn"
        )
    if cfg.workers < 1:
        raise TrainError("--workers must be >= 1")
    if cfg.target_sensitivity is not None and not 0 < cfg.target_sensitivity <= 1:
        raise TrainError("--target-sensitivity must be in (0, 1]")
    val_labels = stats.labels("val", cfg.body_part)
    if cfg.target_sensitivity is not None and min(val_labels.get(0, 0), val_labels.get(1, 0)) == 0:
        raise TrainError(
            f"--target-sensitivity needs both classes in the val split ({dict(val_labels)}): "
            "ingest with a larger --val-fraction or give a --split-file"
        )
    if cfg.per_part_threshold and cfg.target_sensitivity is None:
        raise TrainError(
            "--per-part-threshold needs --target-sensitivity: the sensitivity "
            "each body part's threshold is chosen for"
        )
    uri = resolve_tracking_uri(cfg.tracking_uri)
    check_tracking(uri)
    # last: it may download ~60 MB, not worth it before a cheap check fails
    weights = resolve_initial_weights(cfg.recipe.weights, cfg.recipe.model, uri)
    return Checked(stats, uri, weights)
