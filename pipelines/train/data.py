"""Shards → Ray Datasets for training, and the MURA paper's loss weights.

Rows are filtered by split and body part at the reader, and a `map_batches` step
(`shardsets.to_training_batch`, in a light module so Ray workers import little) turns the
fixed-size binary pixels into a (N, S, S) uint8 tensor column plus the integer columns a
worker needs: label, body-part index, study index.
"""

from __future__ import annotations

from pathlib import Path

import ray.data

from pipelines.shards.shardsets import (
    READ_COLUMNS,
    ShardStats,
    part_index,
    read_split,
    to_training_batch,
)


def split_dataset(shards: Path, split: str, body_part: str | None) -> ray.data.Dataset:
    """One split (and body part) of the shards as a Ray Dataset of training tensors."""
    return read_split(shards, split, body_part, READ_COLUMNS).map_batches(
        to_training_batch, batch_format="pyarrow", batch_size=256
    )


def positive_weights(stats: ShardStats, body_part: str | None) -> dict[int, tuple[float, float]]:
    """MURA paper's per-study-type BCE weights from the training split's images:
    w+ = |N| / (|A| + |N|), w- = |A| / (|A| + |N|), keyed by `part_index`."""
    out = {}
    for part in stats.body_parts("train"):
        if body_part is not None and part != body_part:
            continue
        labels = stats.labels("train", part)
        a, n = labels.get(1, 0), labels.get(0, 0)
        if a + n:
            out[part_index(part)] = (n / (a + n), a / (a + n))
    return out
