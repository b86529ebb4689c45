"""What screening can measure of its input images cheaply: per-image intensity statistics of
the decoded 8-bit pixels, the windowing used, MONOCHROME1 inversions, original sizes. Light
(numpy, pyarrow): the scoring actors import it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from mura_core.shards import ShardsLayout, pixels_array

SAMPLE = 5000  # values kept per distribution (a seeded sample beyond that)
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def quantiles(values: Sequence[float]) -> dict[str, float]:
    """`p05` … `p95` of some values (none for no values)."""
    if not len(values):
        return {}
    return {f"p{round(q * 100):02d}": float(np.quantile(values, q)) for q in QUANTILES}


def sample(values: Iterable[float], seed: int = 0) -> tuple[float, ...]:
    array = np.asarray(list(values), dtype=np.float64)
    array = array[np.isfinite(array)]
    if len(array) > SAMPLE:
        array = np.random.default_rng(seed).choice(array, SAMPLE, replace=False)
    return tuple(float(v) for v in np.sort(array))


@dataclass(frozen=True)
class Inputs:
    """What screening can measure of its input images without another pass over them."""

    pixel_mean: tuple[float, ...]  # per image, of the 8-bit model-input pixels (a sample)
    pixel_std: tuple[float, ...]
    windowing: dict[str, int] = field(default_factory=dict)
    inverted: int = 0
    images: int = 0
    orig_size_quantiles: dict[str, float] = field(default_factory=dict)  # of max(h, w)

    @classmethod
    def measure(
        cls,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        windowing: Sequence[str | None] = (),
        inverted: Sequence[bool | None] = (),
        orig_size: Sequence[float] = (),
    ) -> Inputs:
        sizes = np.asarray([s for s in orig_size if s and s > 0], dtype=np.float64)
        return cls(
            pixel_mean=sample(pixel_mean),
            pixel_std=sample(pixel_std),
            windowing=dict(Counter(w for w in windowing if w)),
            inverted=int(sum(bool(v) for v in inverted)),
            images=len(pixel_mean),
            orig_size_quantiles=quantiles(sizes),
        )


def pixel_stats(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each image of a (B, S, S) uint8 batch."""
    flat = pixels.reshape(len(pixels), -1)
    return flat.mean(axis=1, dtype=np.float64), flat.std(axis=1, dtype=np.float64)


_INPUT_COLUMNS = ["pixels", "windowing", "inverted", "orig_height", "orig_width"]


def shard_inputs(root: Path, split: str, body_part: str | None = None) -> Inputs:
    """`Inputs` of one split (and body part) of a shards folder, a file at a time."""
    filters = [("split", "=", split)] + ([("body_part", "=", body_part)] if body_part else [])
    means, stds, windowing, inverted, sizes = [], [], [], [], []
    for path in ShardsLayout(Path(root)).image_files():
        table = pq.read_table(path, columns=_INPUT_COLUMNS, filters=filters)
        if not table.num_rows:
            continue
        mean, std = pixel_stats(pixels_array(table.column("pixels")))
        means.append(mean)
        stds.append(std)
        windowing += table.column("windowing").to_pylist()
        inverted += table.column("inverted").to_pylist()
        sizes.append(
            np.maximum(
                table.column("orig_height").to_numpy(zero_copy_only=False),
                table.column("orig_width").to_numpy(zero_copy_only=False),
            )
        )
    return Inputs.measure(_join(means), _join(stds), windowing, inverted, _join(sizes))


def _join(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.array([])
