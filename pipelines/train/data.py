"""Shards → Ray Datasets for training, and the MURA paper's loss weights.

Rows are filtered by split and body part at the reader, and a `map_batches` step
(`shardsets.to_training_batch`, in a light module so Ray workers import little) turns the
fixed-size binary pixels into a (N, S, S) uint8 tensor column plus the integer columns a
worker needs: label, body-part index, study index.

The recipe of a training run's data, top to bottom: each split read (`split_dataset`) →
train and val held in Ray's object store when small, the training blocks reshuffled every
epoch by seed (`train_datasets`) → the training set split over the workers in order
(`data_config`) → each worker's local shuffle buffer sized (`shuffle_rows`).
"""

from __future__ import annotations

from pathlib import Path

import ray.data
import ray.train
from ray.data import ExecutionOptions, RandomSeedConfig

from pipelines.runtime.cluster import data_context
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


def train_datasets(
    shards: Path, stats: ShardStats, body_part: str | None, seed: int, *, ordered: bool = True
) -> dict:
    """Train and val datasets; held in Ray's object store when they fit in a quarter of it.

    Streaming from Parquet re-runs the read for every epoch (seconds of start-up each time);
    a small split is read once. A large one (MURA at 320 px is ~4 GB) keeps streaming.
    Reproducible: blocks come in order (`preserve_order`), the training blocks in a new
    seeded order every epoch (`RandomSeedConfig(seed, reseed_after_execution=True)`), and the
    workers' shuffle buffers are seeded by (seed, epoch) — so the same seed, data and number
    of workers give the same batches, run after run (`ordered=False` only to measure what
    that costs: bench/train.py).
    """
    out = {}
    store = ray.available_resources().get("object_store_memory", 0)
    with data_context(enable_progress_bars=False, preserve_order=ordered):
        for split in ("train", "val"):
            ds = split_dataset(shards, split, body_part)
            if stats.images(split, body_part) * stats.size**2 < store / 4:
                ds = ds.materialize()
            if split == "train":  # shards hold patients in archive order: shuffle the blocks
                ds = ds.randomize_block_order(
                    seed=RandomSeedConfig(seed=seed, reseed_after_execution=True)
                    if ordered
                    else None
                )
            out[split] = ds
    return out


def data_config() -> ray.train.DataConfig:
    """Split the training set over the workers, in order (the split is then deterministic:
    Ray's splitter deals blocks to the worker with the fewest rows so far)."""
    return ray.train.DataConfig(
        datasets_to_split=["train"], execution_options=ExecutionOptions(preserve_order=True)
    )


def shuffle_rows(stats: ShardStats, body_part: str | None, batch_size: int) -> int:
    """Rows in each worker's local shuffle buffer: the whole training split when it is small,
    else as many as ~256 MB of pixels hold. Batches drawn from a few blocks in archive order
    come from a handful of patients and one study type; measured on synthetic data, a
    128-row buffer left the seed CNN at chance in half the runs."""
    by_memory = (256 * 2**20) // max(stats.size**2, 1)
    return int(max(4 * batch_size, min(stats.images("train", body_part), by_memory)))
