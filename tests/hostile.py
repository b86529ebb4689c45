"""Hostile inputs built for real: FIFOs, links out, DICOM header bombs, duplicated rows.

Each builder writes real files (pydicom, PIL, os.mkfifo) into a folder the test owns; the
DICOM bombs are streamed through zlib so a test never holds what they inflate to.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from tests.mura_core.test_imaging_bounds import _explicit_le, _preamble_and_meta


def png(path: Path, size: int = 64, seed: int = 0) -> Path:
    """A small real grayscale PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def big_png(path: Path, side: int = 8000) -> Path:
    """A side x side 8-bit PNG (under Pillow's pixel limit), a gradient that compresses."""
    path.parent.mkdir(parents=True, exist_ok=True)
    row = (np.arange(side) * 255 // max(side - 1, 1)).astype(np.uint8)
    Image.fromarray(np.broadcast_to(row, (side, side)).copy()).save(path, compress_level=1)
    return path


def _header(rows: int, columns: int, frames: int, study: str, bits: int = 8) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "HOSTILE"
    ds.Modality = "CR"
    ds.BodyPartExamined = "HAND"
    ds.Rows, ds.Columns = rows, columns
    if frames != 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    return ds


def many_frames(path: Path, frames: int = 2_000_000, study: str | None = None) -> Path:
    """A ~26 KB DICOM whose header claims `frames` frames of 100 x 100 (the pixel data holds
    only a little of it)."""
    ds = _header(100, 100, frames, study or generate_uid())
    ds.PixelData = b"\0" * 26_000
    path.write_bytes(_preamble_and_meta(ds, ExplicitVRLittleEndian) + _explicit_le(ds))
    return path


def deflate_bomb(
    path: Path, inflated: int = 3 * 1024**3, study: str | None = None, side: int = 1024
) -> Path:
    """A deflated DICOM (1.2.840.10008.1.2.1.99) whose header is honest (side x side,
    8-bit) but whose pixel data inflates to `inflated` bytes of zeros: ~1 MB per GB on
    disk. Streamed: the test never holds the inflated bytes."""
    ds = _header(side, side, 1, study or generate_uid())
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    chunk = b"\0" * (16 << 20)
    element = b"\xe0\x7f\x10\x00OB\0\0" + inflated.to_bytes(4, "little")
    parts = [packer.compress(_explicit_le(ds) + element)]
    left = inflated
    while left > 0:
        parts.append(packer.compress(chunk[: min(left, len(chunk))]))
        left -= len(chunk)
    parts.append(packer.flush())
    path.write_bytes(_preamble_and_meta(ds, DeflatedExplicitVRLittleEndian) + b"".join(parts))
    return path


def fifo(path: Path) -> Path:
    """A named pipe with an image's name: opening it for reading blocks without a writer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path
