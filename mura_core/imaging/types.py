"""What a decoder returns: frames plus an account of how they were made."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mura_core.imaging.intensity import to_uint8


@dataclass(frozen=True, slots=True)
class DecodeInfo:
    """How the pixels were derived, for manifests and for explaining odd-looking images.

    `windowing` is one of: voi_lut, window, window_sigmoid, percentile, bit_depth, colour,
    none. `inverted` is True when MONOCHROME1 / INVERSE was flipped so that bone is bright.
    `height`/`width` are the original (pre-resize) dimensions.
    """

    format: str
    photometric: str
    bits_stored: int
    transfer_syntax: str | None
    windowing: str
    inverted: bool
    height: int
    width: int


@dataclass(frozen=True, slots=True)
class Decoded:
    """One file's frames as uint8 grayscale arrays (H, W), bone bright, plus `info`."""

    frames: tuple[np.ndarray, ...]
    info: DecodeInfo

    @classmethod
    def from_unit(cls, unit_frames: Sequence[np.ndarray], info: DecodeInfo) -> Decoded:
        """Quantize [0, 1] float frames once, here, for every format."""
        return cls(frames=tuple(to_uint8(f) for f in unit_frames), info=info)

    @property
    def n_frames(self) -> int:
        return len(self.frames)
