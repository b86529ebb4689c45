"""Reading shards folders from pipelines: checks, counts, split selection.

Shared by training, evaluation and screening. Counting reads only the small columns with
plain pyarrow; selection returns lazy Ray Datasets with the filter pushed to the reader.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray.data
from ray.data.expressions import Expr, col

from mura_core.shards import Manifest, ShardsLayout, image_columns, pixels_array


@dataclass(frozen=True)
class ShardStats:
    """The manifest, and counts from the small columns: images per (split, body part, label)."""

    manifest: Manifest
    counts: Counter[tuple[str, str, int | None]]

    @property
    def size(self) -> int:
        return self.manifest.size

    def images(self, split: str, body_part: str | None = None) -> int:
        return sum(
            n
            for (s, p, _), n in self.counts.items()
            if s == split and (body_part is None or p == body_part)
        )

    def labels(self, split: str, body_part: str | None = None) -> Counter[int | None]:
        out: Counter[int | None] = Counter()
        for (s, p, label), n in self.counts.items():
            if s == split and (body_part is None or p == body_part):
                out[label] += n
        return out

    def body_parts(self, split: str) -> list[str]:
        return sorted({p for (s, p, _), n in self.counts.items() if s == split and n})


def shard_stats(shards: Path) -> ShardStats:
    """Check the shards folder (complete, current schema) and count what it holds."""
    manifest = Manifest.read(shards)
    counts: Counter[tuple[str, str, int | None]] = Counter()
    for path in ShardsLayout(shards).image_files():
        table = pq.read_table(path, columns=["split", "body_part", "label"])
        for row in zip(
            *(table.column(c).to_pylist() for c in ("split", "body_part", "label")), strict=True
        ):
            counts[row] += 1
    return ShardStats(manifest=manifest, counts=counts)


def split_filter(split: str, body_part: str | None) -> Expr:
    """Ray Data expression selecting one split (and body part); pushed down to the reader."""
    expr = col("split") == split
    if body_part is not None:
        expr = expr & (col("body_part") == body_part)
    return expr


def read_split(
    shards: Path, split: str, body_part: str | None, columns: list[str]
) -> ray.data.Dataset:
    """The rows of one split (and body part) of a shards folder, chosen columns only."""
    ds = ray.data.read_parquet(str(ShardsLayout(shards).images))
    return ds.select_columns(columns).filter(expr=split_filter(split, body_part))


# what training reads of a shard row: a `TrainingBatch`'s sources, and the split it filters on
READ_COLUMNS = image_columns("pixels", "label", "body_part", "study_key", "split")


def stable_index(keys: list[str]) -> np.ndarray:
    """Stable int64 ids for string keys (same on every worker and every run): study keys,
    and body parts (any name a source gives: `leg` as well as XR_WRIST)."""
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little") >> 1
            for k in keys
        ],
        dtype=np.int64,
    )


def part_index(part: str) -> int:
    """A body part's id in a `TrainingBatch` (the key of the loss weights)."""
    return int(stable_index([part])[0])


@dataclass(frozen=True)
class TrainingBatch:
    """What a training or validation step reads: (N, S, S) uint8 pixels, labels as floats
    (-1 unknown), body-part ids (`part_index`) and stable study ids. Ray Data moves it
    between processes as a dict of its fields (`to_training_batch` makes that dict, `of`
    reads it back as torch tensors on a worker)."""

    pixels: Any
    label: Any
    body_part: Any
    study: Any

    @classmethod
    def of(cls, batch: dict[str, Any]) -> TrainingBatch:
        return cls(**{f.name: batch[f.name] for f in fields(cls)})

    def labelled(self) -> TrainingBatch | None:
        """The rows with a known label, or None when there are none."""
        keep = self.label >= 0
        if not keep.any():
            return None
        return TrainingBatch(*(getattr(self, f.name)[keep] for f in fields(self)))


def to_training_batch(batch: pa.Table) -> dict[str, np.ndarray]:
    """Ray Data map_batches (pyarrow in, numpy out): the columns of a `TrainingBatch`."""
    labels = batch.column("label").to_numpy(zero_copy_only=False)
    out = TrainingBatch(
        pixels=pixels_array(batch.column("pixels")),
        label=np.nan_to_num(labels.astype(np.float32), nan=-1.0),
        body_part=stable_index(batch.column("body_part").to_pylist()),
        study=stable_index(batch.column("study_key").to_pylist()),
    )
    return {f.name: getattr(out, f.name) for f in fields(out)}
