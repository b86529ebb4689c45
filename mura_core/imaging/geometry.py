"""Geometry: one sample shape everywhere (a square of `size`), aspect ratio kept.

Big images are shrunk early, while decoding (`shrink_factor` + `block_mean` or the
decoder's own scaling), to a working size of at least `work_side` on the longer side, so
that no full-resolution float copy is ever made; `resize_pad` then gives the final square.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Output rows of block means accumulated at once (in int64): bounds the accumulator's memory.
_STRIP_VALUES = 1 << 20


def shrink_factor(height: int, width: int, work_side: int | None) -> int:
    """The integer factor an image may be shrunk by while its longer side stays >=
    `work_side` (1 when `work_side` is None or the image is already small)."""
    if work_side is None:
        return 1
    if work_side < 1:
        raise ValueError(f"work_side must be >= 1, got {work_side}")
    return max(1, max(height, width) // work_side)


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Each `factor`×`factor` block's mean (the last row/column of blocks over what is
    left), as PIL's `Image.reduce` does, on the first two axes of (H, W) or (H, W, C).

    Integer images stay in their dtype (the mean rounded half up), so lookup tables indexed
    by stored values still apply; the int64 accumulator is filled strip by strip, so it
    never holds more than `_STRIP_VALUES` values, whatever the image size.
    """
    if factor <= 1:
        return image
    height, width = image.shape[:2]
    is_float = image.dtype.kind == "f"
    acc = np.float64 if is_float else np.int64
    cols = np.arange(0, width, factor)
    col_counts = np.diff(np.append(cols, width))
    out = np.empty((len(range(0, height, factor)), len(cols), *image.shape[2:]), image.dtype)
    step = factor * max(1, _STRIP_VALUES // (width * int(np.prod(image.shape[2:]))))
    for top in range(0, height, step):
        strip = image[top : top + step]
        rows = np.arange(0, strip.shape[0], factor)
        sums = np.add.reduceat(np.add.reduceat(strip, rows, axis=0, dtype=acc), cols, axis=1)
        counts = np.outer(np.diff(np.append(rows, strip.shape[0])), col_counts)
        counts = counts.reshape(counts.shape + (1,) * (image.ndim - 2))
        block = sums / counts if is_float else (2 * sums + counts) // (2 * counts)
        out[top // factor : top // factor + len(rows)] = block
    return out


def pad_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """Where `resize_pad` puts a width×height image in its size×size square:
    (left, top, new_w, new_h) — the longer side scaled to `size` (each side rounded, at
    least 1 px), the result centred (odd leftovers go right/bottom). The one place of this
    rule: `resize_pad` and the localization masks (`mura_core.localization`) both use it."""
    if max(width, height) < 1:
        raise ValueError(f"an image needs a side >= 1 px, got {width}x{height}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    scale = size / max(height, width)
    new_w = max(1, min(size, round(width * scale)))
    new_h = max(1, min(size, round(height * scale)))
    return (size - new_w) // 2, (size - new_h) // 2, new_w, new_h


def resize_pad(image: np.ndarray, size: int) -> np.ndarray:
    """Scale the longer side to `size`, keep the aspect ratio, pad to size×size with black.

    Stretching a 2:1 forearm film to a square would change bone widths the model learns from;
    padding keeps anatomy undistorted, centred, on the background value (0 = air).
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {image.shape}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    height, width = image.shape
    left, top, new_w, new_h = pad_box(width, height, size)
    if (new_h, new_w) != (height, width):
        # Pillow's BILINEAR widens its kernel when shrinking, so this is antialiased.
        resized = np.asarray(
            Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR)
        )
    else:
        resized = image
    out = np.zeros((size, size), dtype=np.uint8)
    out[top : top + new_h, left : left + new_w] = resized
    return out
