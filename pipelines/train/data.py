"""Shards → Ray Datasets for training: filtered at read, pixels as uint8 tensors.

Rows are filtered by split and body part in the Parquet reader (predicate pushdown), and a
`map_batches` step turns the fixed-size binary pixels into a (N, S, S) uint8 tensor column
plus integer columns the workers need: label, body-part index, study index (a stable hash,
so study-level AUROC can be computed on the worker without string columns).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray.data

from mura_core.records import BodyPart
from mura_core.shards import pixels_array

from ..shardsets import ShardStats, read_split

BODY_PART_INDEX = {str(p): i for i, p in enumerate(BodyPart)}
READ_COLUMNS = ["pixels", "label", "body_part", "study_key", "split"]


def study_index(keys: list[str]) -> np.ndarray:
    """Stable int64 ids for study keys (same on every worker and every run)."""
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little") >> 1
            for k in keys
        ],
        dtype=np.int64,
    )


def to_training_batch(batch: pa.Table) -> dict[str, np.ndarray]:
    """Ray Data map_batches (pyarrow in, numpy out): the tensors a training step reads."""
    labels = batch.column("label").to_numpy(zero_copy_only=False)
    return {
        "pixels": pixels_array(batch.column("pixels")),
        "label": np.nan_to_num(labels.astype(np.float32), nan=-1.0),
        "body_part": np.array(
            [BODY_PART_INDEX[p] for p in batch.column("body_part").to_pylist()], dtype=np.int64
        ),
        "study": study_index(batch.column("study_key").to_pylist()),
    }


def split_dataset(shards: Path, split: str, body_part: str | None) -> ray.data.Dataset:
    """One split (and body part) of the shards as a Ray Dataset of training tensors."""
    return read_split(shards, split, body_part, READ_COLUMNS).map_batches(
        to_training_batch, batch_format="pyarrow", batch_size=256
    )


def positive_weights(stats: ShardStats, body_part: str | None) -> dict[int, tuple[float, float]]:
    """MURA paper's per-study-type BCE weights from the training split's images:
    w+ = |N| / (|A| + |N|), w- = |A| / (|A| + |N|), keyed by body-part index."""
    out = {}
    for part in stats.body_parts("train"):
        if body_part is not None and part != body_part:
            continue
        labels = stats.labels("train", part)
        a, n = labels.get(1, 0), labels.get(0, 0)
        if a + n:
            out[BODY_PART_INDEX[part]] = (n / (a + n), a / (a + n))
    return out
