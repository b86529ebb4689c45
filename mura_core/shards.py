"""The shards folder: its layout, Parquet schemas and manifest, readable without Ray.

```
SHARDS/
  images/*.parquet     one row per image, pixels as a fixed-shape uint8 tensor
  quarantine.parquet   one row per input that could not be used, with the reason
  manifest.json        counts, source, sizes; written last: its presence means complete
  reidentify.csv       pseudonym → original identifier (DICOM only, 0600, never logged)
```
Training and screening read `images/`; plain pyarrow can too (`read_images`).
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = 1
IMAGES_DIR = "images"
QUARANTINE_FILE = "quarantine.parquet"
MANIFEST_FILE = "manifest.json"
REIDENTIFY_FILE = "reidentify.csv"
MARKER_FILE = ".mura-shards"


def pixels_type(size: int) -> pa.DataType:
    """size×size uint8, row-major, as one fixed-size binary value per row.

    Not Arrow's fixed_shape_tensor: Parquet stores that as a LIST of size² values with
    repetition/definition levels, which measured ~10x slower to write and read than one
    fixed-size blob per row. The shape is the square root of the width (and in the
    manifest as `size`).
    """
    return pa.binary(size * size)


# (name, type or None for pixels, description) — the README's schema table is this list.
IMAGE_COLUMNS: tuple[tuple[str, pa.DataType | None, str], ...] = (
    ("image_id", pa.string(), "unique image id (DICOM: pseudonym of SOPInstanceUID[#frame])"),
    ("study_key", pa.string(), "study id (DICOM: pseudonym of StudyInstanceUID)"),
    ("patient_key", pa.string(), "patient id (DICOM: pseudonym of PatientID)"),
    ("body_part", pa.string(), "XR_ELBOW … XR_WRIST, or OTHER"),
    ("view", pa.string(), "view position if known (DICOM ViewPosition), else null"),
    ("label", pa.int8(), "study label: 1 abnormal, 0 normal, null unknown"),
    ("split", pa.string(), "train / val / test (by patient)"),
    ("source_split", pa.string(), "the source's own split (MURA: train / valid), else null"),
    ("relpath", pa.string(), "path relative to the archive root (DICOM: pseudonym)"),
    ("frame", pa.int32(), "frame index in a multi-frame file, else 0"),
    ("orig_height", pa.int32(), "height before resizing"),
    ("orig_width", pa.int32(), "width before resizing"),
    ("windowing", pa.string(), "how intensities were mapped: window, voi_lut, percentile, …"),
    ("inverted", pa.bool_(), "MONOCHROME1 / INVERSE was inverted so that bone is bright"),
    ("pixels", None, "uint8 size×size row-major, aspect kept, black padding (fixed-size binary)"),
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("image_id", pa.string()),
        ("study_key", pa.string()),
        ("stage", pa.string()),
        ("error_type", pa.string()),
        ("reason", pa.string()),
    ]
)


def image_schema(size: int) -> pa.Schema:
    """Schema of the rows in `images/` for a given pixel size."""
    return pa.schema(
        [
            (name, dtype if dtype is not None else pixels_type(size))
            for name, dtype, _ in IMAGE_COLUMNS
        ]
    )


@dataclass(frozen=True)
class ShardsLayout:
    """Paths inside a shards folder."""

    root: Path

    @property
    def images(self) -> Path:
        return self.root / IMAGES_DIR

    @property
    def quarantine(self) -> Path:
        return self.root / QUARANTINE_FILE

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST_FILE

    @property
    def reidentify(self) -> Path:
        return self.root / REIDENTIFY_FILE

    @property
    def marker(self) -> Path:
        return self.root / MARKER_FILE

    def image_files(self) -> list[Path]:
        return sorted(self.images.glob("*.parquet")) if self.images.is_dir() else []


class ShardsError(Exception):
    """A shards folder that is missing, incomplete, or not a shards folder."""


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The manifest of a complete shards folder; a one-line error otherwise."""
    layout = ShardsLayout(Path(root))
    if not layout.root.is_dir():
        raise ShardsError(f"shards folder not found: {layout.root}")
    if not layout.manifest.is_file():
        raise ShardsError(
            f"{layout.root} has no {MANIFEST_FILE}: not a complete ingest "
            "(re-run `mura ingest` into it)"
        )
    return json.loads(layout.manifest.read_text())


def read_images(root: str | Path, columns: list[str] | None = None) -> pa.Table:
    """All image rows of a complete shards folder as one Arrow table (plain pyarrow)."""
    read_manifest(root)
    files = ShardsLayout(Path(root)).image_files()
    if not files:
        return image_schema(int(read_manifest(root)["size"])).empty_table()
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])


def read_quarantine(root: str | Path) -> pa.Table:
    return pq.read_table(ShardsLayout(Path(root)).quarantine)


def pixels_array(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The pixels column as a (rows, size, size) uint8 array (zero-copy for one chunk)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    width = array.type.byte_width
    size = int(round(width**0.5))
    if size * size != width:
        raise ShardsError(f"pixels column of {width} bytes per row is not a square image")
    if array.null_count:
        raise ShardsError("pixels column holds nulls")
    data = np.frombuffer(
        array.buffers()[1], dtype=np.uint8, count=len(array) * width, offset=array.offset * width
    )
    return data.reshape(len(array), size, size)


def encode_pixels(images: np.ndarray) -> pa.Array:
    """(rows, size, size) uint8 → the pixels column (one fixed-size binary per row)."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    rows, height, width = images.shape
    buffer = pa.py_buffer(images.reshape(-1))
    return pa.Array.from_buffers(pa.binary(height * width), rows, [None, buffer])


def make_writable_dir(folder: Path) -> None:
    """Create `folder` and prove it writable with a probe file (raises OSError): outputs are
    checked before any work starts, not discovered unwritable at the end."""
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".write-probe-{uuid.uuid4().hex}"
    probe.write_text("")
    probe.unlink()


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write then rename, so a reader never sees half a manifest."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
