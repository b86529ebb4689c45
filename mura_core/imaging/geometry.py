"""Geometry: one sample shape everywhere (a square of `size`), aspect ratio kept."""

from __future__ import annotations

import numpy as np
from PIL import Image


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
    scale = size / max(height, width)
    new_w = max(1, min(size, round(width * scale)))
    new_h = max(1, min(size, round(height * scale)))
    if (new_h, new_w) != (height, width):
        # Pillow's BILINEAR widens its kernel when shrinking, so this is antialiased.
        resized = np.asarray(
            Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR)
        )
    else:
        resized = image
    out = np.zeros((size, size), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = resized
    return out
