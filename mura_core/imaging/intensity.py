"""Intensity mapping to display range: windows, luminance, uint8.

Everything here works on float arrays in the modality's value space and returns floats in
[0, 1] (0 = black); `to_uint8` is the single place where values are quantized, so DICOM and
PNG paths quantize identically.
"""

from __future__ import annotations

import numpy as np

# ITU-R BT.601 luma, the weights PIL's convert("L") uses: colour photos of films and
# screenshots of viewers become the gray a radiologist would have seen.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)

PERCENTILE_WINDOW = (0.5, 99.5)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """(..., H, W, 3) colour → (..., H, W) float luminance in the input's value range."""
    if rgb.shape[-1] not in (3, 4):
        raise ValueError(f"expected 3 or 4 colour samples in the last axis, got {rgb.shape}")
    return rgb[..., :3].astype(np.float64) @ _LUMA


def linear_window(values: np.ndarray, center: float, width: float, *, exact: bool) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 LINEAR / LINEAR_EXACT window to [0, 1]."""
    values = values.astype(np.float64, copy=False)
    if exact:
        out = (values - (center - width / 2.0)) / max(width, 1e-12)
        return np.clip(out, 0.0, 1.0)
    # LINEAR: width - 1 and center - 0.5, as the standard defines it
    out = ((values - (center - 0.5)) / max(width - 1.0, 1e-12)) + 0.5
    return np.clip(out, 0.0, 1.0)


def sigmoid_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM SIGMOID VOI LUT function, to [0, 1]."""
    values = values.astype(np.float64, copy=False)
    return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / max(width, 1e-12)))


def percentile_window(
    values: np.ndarray, low_high: tuple[float, float] = PERCENTILE_WINDOW
) -> np.ndarray:
    """Robust window when the file gives none: clip to the 0.5–99.5 percentiles.

    Min/max windows let a single hot pixel (or a burned-in marker) flatten the whole image;
    percentiles ignore them. A constant image maps to 0.
    """
    values = values.astype(np.float64, copy=False)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape, dtype=np.float64)
    lo, hi = np.percentile(finite, low_high)
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.float64)
    out = (np.nan_to_num(values, nan=lo) - lo) / (hi - lo)
    return np.clip(out, 0.0, 1.0)


def range_window(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map a known value range (e.g. 0..2**bits-1) to [0, 1]."""
    if high <= low:
        return np.zeros(values.shape, dtype=np.float64)
    return np.clip((values.astype(np.float64, copy=False) - low) / (high - low), 0.0, 1.0)


def to_uint8(unit: np.ndarray) -> np.ndarray:
    """[0, 1] floats → uint8 with rounding (the only quantization step)."""
    return np.clip(np.rint(unit * 255.0), 0, 255).astype(np.uint8)
