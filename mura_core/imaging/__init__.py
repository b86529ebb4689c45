"""Decode radiographs (PNG, JPEG, DICOM) to uint8 grayscale, bone bright, one shape for all.

A reader is chosen by file suffix (MONAI-style); files without a known suffix (DICOM often
has none) are sniffed by their magic bytes. `load_image` is the single entry point that
ingest and screening both call, so a shard's pixels always equal what screening would see.

Memory: `work_side` lets a decoder shrink a big image by an integer factor while decoding
(JPEG DCT scaling, `Image.reduce`, block means of DICOM's integer pixels), the longer side
kept >= work_side, so no full-resolution float copy is made; `select_frame` then resizes
the smaller image as before. Callers that resize to `size` pass `work_side=2*size`.
`DecodeInfo.height/width` stay the original size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mura_core.imaging.dicom import check_geometry, decode_dicom, looks_like_dicom, read_header
from mura_core.imaging.errors import (
    CorruptFileError,
    ImageTooLargeError,
    ImagingError,
    NotAnImageError,
    UnsupportedImageError,
    UnsupportedTransferSyntaxError,
    one_line,
)
from mura_core.imaging.geometry import resize_pad
from mura_core.imaging.pil_reader import decode_pil
from mura_core.imaging.types import Decoded, DecodeInfo

# 64 Mpx: above the largest CR/DX plates (~43x43 cm at 100 µm ≈ 18 Mpx), far below a bomb.
DEFAULT_MAX_PIXELS = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ImageReader:
    """A decoder and the file suffixes it claims."""

    name: str
    suffixes: tuple[str, ...]
    decode: Callable[..., Decoded]

    def matches(self, name: str) -> bool:
        return name.lower().endswith(self.suffixes)


PIL_READER = ImageReader("pil", (".png", ".jpg", ".jpeg"), decode_pil)
DICOM_READER = ImageReader("dicom", (".dcm", ".dicom", ".dic"), decode_dicom)
READERS: tuple[ImageReader, ...] = (PIL_READER, DICOM_READER)
IMAGE_SUFFIXES: tuple[str, ...] = PIL_READER.suffixes

_MAGIC = ((b"\x89PNG\r\n\x1a\n", PIL_READER), (b"\xff\xd8\xff", PIL_READER))


def reader_for(name: str, head: bytes = b"") -> ImageReader:
    """The reader for a file name; unknown suffixes fall back to sniffing `head`."""
    for reader in READERS:
        if reader.matches(name):
            return reader
    if looks_like_dicom(head):
        return DICOM_READER
    for magic, reader in _MAGIC:
        if head.startswith(magic):
            return reader
    suffix = Path(name).suffix or "(no suffix)"
    raise UnsupportedImageError(f"unknown image format {suffix}: not PNG, JPEG or DICOM")


def decode_bytes(
    data: bytes,
    name: str,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    work_side: int | None = None,
) -> Decoded:
    """Decode file contents; `name` (a path or file name) picks the reader by suffix.

    `work_side`: the decoder may shrink the image by an integer factor while decoding, its
    longer side kept >= work_side (None: full resolution). A programming error (work_side
    < 1) is a ValueError, not an ImagingError."""
    if work_side is not None and work_side < 1:
        raise ValueError(f"work_side must be >= 1 or None, got {work_side}")
    if not data:
        raise CorruptFileError("empty file (0 bytes)")
    reader = reader_for(name, data[:132])
    return reader.decode(data, max_pixels=max_pixels, work_side=work_side)


def decode(
    path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, work_side: int | None = None
) -> Decoded:
    """Decode a file on disk into all its frames (multi-frame DICOM → one image per frame),
    read through the archive layer's safe read (a regular file, at most its default cap;
    an archive's files go through `mura_core.archive.ArchiveFiles`, which adds the root)."""
    from mura_core.archive.files import DEFAULT_MAX_BYTES, read_regular  # archive imports imaging

    data = read_regular(path, max_bytes=DEFAULT_MAX_BYTES)
    return decode_bytes(data, str(path), max_pixels=max_pixels, work_side=work_side)


def select_frame(decoded: Decoded, frame: int, size: int | None) -> np.ndarray:
    """One frame of a decoded file, resized and padded to size×size when `size` is given."""
    if not 0 <= frame < decoded.n_frames:
        raise CorruptFileError(f"frame {frame} requested but the file has {decoded.n_frames}")
    image = decoded.frames[frame]
    return image if size is None else resize_pad(image, size)


def load_image(
    path: str | Path,
    *,
    frame: int = 0,
    size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """The model-ready image of one reference: uint8 (size, size), or native size if None
    (decoded at a working size of 2*size when resized: see the module doc)."""
    work_side = None if size is None else 2 * size
    return select_frame(decode(path, max_pixels=max_pixels, work_side=work_side), frame, size)


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "READERS",
    "CorruptFileError",
    "DecodeInfo",
    "Decoded",
    "ImageReader",
    "ImageTooLargeError",
    "ImagingError",
    "NotAnImageError",
    "UnsupportedImageError",
    "UnsupportedTransferSyntaxError",
    "check_geometry",
    "decode",
    "decode_bytes",
    "load_image",
    "one_line",
    "read_header",
    "reader_for",
    "resize_pad",
    "select_frame",
]
