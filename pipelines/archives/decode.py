"""The Ray Data UDF: read and decode a batch of image rows, one row out per row in.

Every row comes out, either with pixels (`problem` null) or with its problem (pixels zero):
errors are caught per row here, never by dropping blocks, so found = ingested + quarantined
holds by construction and is checked again at the end.

A row's `path` column is its location (`mura_core.locations`), turned back into one here;
its bytes come from the `Archive` it was listed from (`Archive.read`: files through the
archive layer, one at a time; PACS instances fetched for the whole batch). Memory stays
bounded: one input is decoded at a time, at a working size of twice the output
(`WORK_FACTOR`), and reduced to its rows' size x size frames before the next; a batch
holds at most `BATCH_PIXELS` output pixels (`rows_per_batch`).

Screening a PACS also asks for a second copy of each frame, `keep` px on a side (the
`kept` column), made from the same decoded image as the model's pixels: the report's
pictures and the Secondary Captures are made from it later, so no instance is fetched twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa

from mura_core import imaging
from mura_core.archive import Archive
from mura_core.locations import FileLocation, Location, parse_location
from mura_core.records import DecodedImage, Failure
from mura_core.schema import arrow_schema, column_names
from mura_core.shards import KEPT_PIXELS, encode_pixels, image_schema
from pipelines.runtime.progress import ProgressSink

PROBLEM_TYPE = pa.struct(arrow_schema(Failure))
_DECODED = tuple(name for name in column_names(DecodedImage) if name != "pixels")
WORK_FACTOR = 2  # decoders may shrink an image while its longer side stays >= 2 x size
BATCH_PIXELS = 16 * 512 * 512  # output pixels of one decode batch (16 images at 512 px)


def rows_per_batch(size: int, requested: int) -> int:
    """A decode batch sized by pixels: at most `requested` rows, at most BATCH_PIXELS."""
    return max(1, min(requested, BATCH_PIXELS // (size * size)))


def staging_schema(size: int) -> pa.Schema:
    """Image columns plus `problem`: null for a decoded image, else why it is quarantined."""
    return image_schema(size).append(pa.field("problem", PROBLEM_TYPE))


def _decode_one(
    data: bytes | imaging.ImagingError, name: str, size: int | None
) -> imaging.Decoded | imaging.ImagingError:
    """Decode one input's bytes (at a working size for `size`), or the reason it fails."""
    if isinstance(data, imaging.ImagingError):
        return data
    work = None if size is None else WORK_FACTOR * size
    try:
        return imaging.decode_bytes(data, name, work_side=work)
    except imaging.ImagingError as exc:
        return exc
    except Exception as exc:  # a decoder bug must not cost the other rows of the batch
        return imaging.ImagingError(f"unexpected {type(exc).__name__}: {exc}")


def decode_locations(
    archive: Archive, locations: Sequence[Location], size: int | None = None
) -> Iterator[tuple[Location, imaging.Decoded | imaging.ImagingError]]:
    """Each location decoded once, one at a time (a multi-frame file serves one row per
    frame), its bytes read from `archive`: PACS bytes are decoded exactly as a file's."""
    unique = list(dict.fromkeys(locations))
    for location, data in archive.read(unique):
        name = location.path if isinstance(location, FileLocation) else "instance.dcm"
        yield location, _decode_one(data, name, size)


def decode_batch(
    batch: pa.Table,
    *,
    size: int,
    archive: Archive,
    progress: ProgressSink | None = None,
    total: int = 0,
    keep: int | None = None,
) -> pa.Table:
    """Ray Data `map_batches` function (batch_format='pyarrow'): image rows in, staging
    rows out (and, given a `progress` sink, the batch's rows counted on the driver's
    console); the bytes are read from `archive` inside this task. With `keep`, each row
    also carries its frame at keep x keep (`kept`, zero where the row failed), from the
    same decode."""
    rows: list[dict[str, Any]] = batch.to_pylist()
    if progress is not None:
        progress.advance("ingest", len(rows), total)
    pixels = np.zeros((len(rows), size, size), dtype=np.uint8)
    kept = np.zeros((len(rows), keep, keep), dtype=np.uint8) if keep else None
    by_location: dict[Location, list[int]] = {}
    for i, row in enumerate(rows):
        by_location.setdefault(parse_location(row["path"]), []).append(i)
    for location, result in decode_locations(archive, list(by_location), size):
        for i in by_location[location]:
            _fill(rows[i], pixels, i, result, size)
            if kept is not None and rows[i]["problem"] is None:
                kept[i] = imaging.select_frame(result, int(rows[i]["frame"] or 0), keep)
    schema = staging_schema(size)
    columns = {name: [row.get(name) for row in rows] for name in schema.names if name != "pixels"}
    columns["pixels"] = encode_pixels(pixels)
    table = pa.table({name: columns[name] for name in schema.names}, schema=schema)
    return table if kept is None else table.append_column(KEPT_PIXELS, encode_pixels(kept))


def _fill(
    row: dict[str, Any],
    pixels: np.ndarray,
    i: int,
    result: imaging.Decoded | imaging.ImagingError,
    size: int,
) -> None:
    """Row `i`'s frame into `pixels` and its decode columns, or its problem."""
    if isinstance(result, imaging.Decoded):
        try:
            pixels[i] = imaging.select_frame(result, int(row["frame"] or 0), size)
            info = result.info
            row.update(
                orig_height=info.height,
                orig_width=info.width,
                windowing=info.windowing,
                inverted=info.inverted,
                problem=None,
            )
            return
        except imaging.ImagingError as exc:
            result = exc
    row.update(
        dict.fromkeys(_DECODED),
        problem=asdict(Failure(result.error_type, result.reason)),
    )
