"""The shards folder: its layout, Parquet schemas and manifest, readable without Ray.

```
SHARDS/
  images/*.parquet     one row per image, pixels as a fixed-shape uint8 tensor
  quarantine.parquet   one row per input that could not be used, with the reason
  manifest.json        `Manifest`: counts, source, sizes; written last: its presence means
                       complete, and every reader checks it (`Manifest.read`)
  reidentify.csv       pseudonym → original identifier (DICOM only, 0600, never logged)
  .mura-shards         the marker (the source's name): the folder is ours (`mura_core.outputs`)
  .lock                held by the `mura ingest` writing it (one run at a time)
```
Training and screening read `images/`; plain pyarrow can too (`read_images`). The schemas
are the records' (`mura_core.schema`): an image row is an `ImageRow`'s columns then a
`DecodedImage`'s, a quarantine row a `QuarantineRow`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mura_core import __version__
from mura_core.errors import MuraError
from mura_core.outputs import write_text_atomic
from mura_core.records import DecodedImage, ImageRow, QuarantineRow
from mura_core.schema import arrow_schema, column_names, projection
from mura_core.splits import SplitConfig

SCHEMA_VERSION = 1
IMAGES_DIR = "images"
QUARANTINE_FILE = "quarantine.parquet"
MANIFEST_FILE = "manifest.json"
REIDENTIFY_FILE = "reidentify.csv"
SPLIT_FILE = "split.csv"  # path,split of every listed image (mura_core.splits)
MARKER_FILE = ".mura-shards"
# not a shard column: a PACS screening's decoded rows also carry each frame at the size of
# its pictures (`pipelines.archives.decode`), kept by the driver for the pictures after scoring
KEPT_PIXELS = "kept"


def pixels_type(size: int) -> pa.DataType:
    """size×size uint8, row-major, as one fixed-size binary value per row.

    Not Arrow's fixed_shape_tensor: Parquet stores that as a LIST of size² values with
    repetition/definition levels, which measured ~10x slower to write and read than one
    fixed-size blob per row. The shape is the square root of the width (and in the
    manifest as `size`).
    """
    return pa.binary(size * size)


# A shard row: an `ImageRow`'s columns (not its `path`), then a `DecodedImage`'s.
IMAGE_COLUMNS: tuple[str, ...] = column_names(ImageRow, DecodedImage)
QUARANTINE_SCHEMA = arrow_schema(QuarantineRow)


def image_schema(size: int) -> pa.Schema:
    """Schema of the rows in `images/` for a given pixel size."""
    return arrow_schema(ImageRow, DecodedImage, types={"pixels": pixels_type(size)})


def image_columns(*names: str) -> list[str]:
    """Chosen columns of the shard rows (a ValueError names any that is not one)."""
    return projection(IMAGE_COLUMNS, *names)


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
    def split_file(self) -> Path:
        return self.root / SPLIT_FILE

    @property
    def marker(self) -> Path:
        return self.root / MARKER_FILE

    def image_files(self) -> list[Path]:
        return sorted(self.images.glob("*.parquet")) if self.images.is_dir() else []


class ShardsError(MuraError):
    """A shards folder that is missing, incomplete, or not a shards folder."""


@dataclass(frozen=True)
class ManifestCounts:
    """Every input found ends in one place: found = ingested + quarantined (junk aside)."""

    found: int
    ingested: int
    quarantined: int
    junk_skipped: int


@dataclass(frozen=True)
class Manifest:
    """What one ingest wrote; `manifest.json` (keys = field names, plus `law_holds`).

    Written last, so its presence means the set is complete; `Manifest.read` is the one way
    in, and refuses a folder that is missing, incomplete or of another shard schema.
    `by_body_part_and_label` counts images per body part and label ("0", "1",
    "unlabelled"), `by_split` per final split, `quarantine_by_type` per error type.
    """

    source: str
    kind: str
    size: int
    rows_per_shard: int
    shards: int
    counts: ManifestCounts
    by_body_part_and_label: dict[str, dict[str, int]]
    by_split: dict[str, int]
    quarantine_by_type: dict[str, int]
    splits: SplitConfig
    pseudonymized: bool
    notes: tuple[str, ...]
    started_at: str
    seconds: float
    tool_version: str = __version__
    schema_version: int = SCHEMA_VERSION

    @property
    def law_holds(self) -> bool:
        return self.counts.found == self.counts.ingested + self.counts.quarantined

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(
            counts=asdict(self.counts),
            splits=asdict(self.splits),
            notes=list(self.notes),
            law_holds=self.law_holds,
        )
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        names = {f.name for f in fields(cls)} - {"counts", "splits", "notes"}
        return cls(
            counts=ManifestCounts(**data["counts"]),
            splits=SplitConfig(**data["splits"]),
            notes=tuple(data["notes"]),
            **{name: data[name] for name in names},
        )

    def write(self, root: str | Path) -> Path:
        """Write `root/manifest.json` atomically: a reader never sees half a manifest."""
        path = ShardsLayout(Path(root)).manifest
        write_json_atomic(path, self.to_json())
        return path

    @classmethod
    def read(cls, root: str | Path) -> Manifest:
        """The manifest of a complete shards folder of this schema; a one-line error otherwise."""
        layout = ShardsLayout(Path(root))
        if not layout.root.is_dir():
            raise ShardsError(f"shards folder not found: {layout.root}")
        if not layout.manifest.is_file():
            raise ShardsError(
                f"{layout.root} has no {MANIFEST_FILE}: not a complete ingest "
                "(re-run `mura ingest` into it)"
            )
        try:
            data = json.loads(layout.manifest.read_text())
        except json.JSONDecodeError as exc:
            raise ShardsError(f"{layout.manifest} is not valid JSON: re-run `mura ingest`") from exc
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version != SCHEMA_VERSION:
            raise ShardsError(
                f"{layout.root} was written with shard schema {version!r}, this tool reads "
                f"{SCHEMA_VERSION}: re-run `mura ingest`"
            )
        try:
            return cls.from_json(data)
        except KeyError as exc:
            raise ShardsError(
                f"{layout.manifest} lacks {exc}: not written by `mura ingest`; re-run it"
            ) from exc


def read_images(root: str | Path, columns: list[str] | None = None) -> pa.Table:
    """All image rows of a complete shards folder as one Arrow table (plain pyarrow)."""
    manifest = Manifest.read(root)
    files = ShardsLayout(Path(root)).image_files()
    if not files:
        return image_schema(manifest.size).empty_table()
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])


def read_image_rows(root: str | Path, image_ids: Iterable[str], columns: list[str]) -> pa.Table:
    """Some images' rows (by `image_id` as stored), reading each file's ids first and then
    only the row groups that hold a wanted image: a few pictures do not read every pixel."""
    wanted = pa.array(sorted(set(image_ids)), pa.string())
    tables = [image_schema(Manifest.read(root).size).empty_table().select(columns)]
    for path in ShardsLayout(Path(root)).image_files():
        file = pq.ParquetFile(path)
        for group in range(file.num_row_groups):
            ids = file.read_row_group(group, columns=["image_id"])["image_id"]
            mask = pc.is_in(ids, value_set=wanted)
            if pc.any(mask).as_py():
                tables.append(file.read_row_group(group, columns=columns).filter(mask))
    return pa.concat_tables(tables)


def quarantine_table(rows: Iterable[QuarantineRow]) -> pa.Table:
    """Quarantine rows as the Arrow table written to `quarantine.parquet`."""
    return pa.Table.from_pylist([row.to_dict() for row in rows], schema=QUARANTINE_SCHEMA)


def read_quarantine_rows(root: str | Path) -> list[QuarantineRow]:
    """The quarantine of a shards folder as typed rows (none if it has no table)."""
    path = ShardsLayout(Path(root)).quarantine
    return (
        [QuarantineRow.from_dict(r) for r in pq.read_table(path).to_pylist()]
        if path.is_file()
        else []
    )


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


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write then rename, so a reader never sees half a manifest; an OSError is one line
    naming `path` (`outputs.OutputError`) and leaves no temporary file."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")
