"""The Ray Data UDF: read and decode a batch of image references, one row out per row in.

Every row comes out, either with pixels (`problem` null) or with its problem (pixels zero):
errors are caught per row here, never by dropping blocks, so found = ingested + quarantined
holds by construction and is checked again at the end.

Files are read through the archive layer (`ArchiveFiles`: regular files inside the root, a
read cap), PACS instances fetched for the whole batch. Memory stays bounded: one file is
decoded at a time, at a working size of twice the output (`WORK_FACTOR`), and reduced to
its rows' size x size frames before the next; a batch holds at most `BATCH_PIXELS` output
pixels (`rows_per_batch`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa

from mura_core import imaging
from mura_core.archive import DEFAULT_MAX_BYTES, ArchiveFiles, read_regular
from mura_core.locations import Location, PacsInstance, parse_location
from mura_core.pacs.client import Pacs
from mura_core.records import DecodedImage, Failure
from mura_core.schema import arrow_schema, column_names
from mura_core.shards import encode_pixels, image_schema

from ..progress import ProgressSink

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


def _guarded(decode: Callable[[], imaging.Decoded]) -> imaging.Decoded | imaging.ImagingError:
    try:
        return decode()
    except imaging.ImagingError as exc:
        return exc
    except Exception as exc:  # a decoder bug must not cost the other rows of the batch
        return imaging.ImagingError(f"unexpected {type(exc).__name__}: {exc}")


def _reader(
    location: Location,
    files: ArchiveFiles | None,
    fetched: dict[PacsInstance, bytes | imaging.ImagingError] | None,
) -> Callable[[], bytes]:
    """How to get one input's bytes: a PACS instance already fetched, or a file read
    through the archive layer (`files`; None: a file given by hand, read with the cap)."""
    if isinstance(location, PacsInstance):
        assert fetched is not None

        def from_pacs() -> bytes:
            data = fetched[location]
            if isinstance(data, imaging.ImagingError):
                raise data
            return data

        return from_pacs
    if files is not None:
        return partial(files.read, location.path)
    return partial(read_regular, location.path, max_bytes=DEFAULT_MAX_BYTES)


def _decode_one(
    read: Callable[[], bytes], name: str, size: int | None
) -> imaging.Decoded | imaging.ImagingError:
    """Read and decode one input (at a working size for `size`), or the reason it fails."""
    work = None if size is None else WORK_FACTOR * size
    return _guarded(lambda: imaging.decode_bytes(read(), name, work_side=work))


def decode_paths(
    locations: list[Location],
    pacs: Pacs | None = None,
    files: ArchiveFiles | None = None,
    size: int | None = None,
) -> Iterator[tuple[Location, imaging.Decoded | imaging.ImagingError]]:
    """Each location decoded once, one at a time (a multi-frame file has one row per
    frame): files through the archive layer, or PACS instances fetched (one request or
    association for the batch), whose bytes `mura_core.imaging` decodes exactly as a
    file's."""
    unique = list(dict.fromkeys(locations))
    instances = [loc for loc in unique if isinstance(loc, PacsInstance)]
    fetched = pacs.fetch(instances) if pacs is not None else None
    for location in unique:
        name = "instance.dcm" if isinstance(location, PacsInstance) else location.path
        yield location, _decode_one(_reader(location, files, fetched), name, size)


def decode_batch(
    batch: pa.Table,
    *,
    size: int,
    progress: ProgressSink | None = None,
    total: int = 0,
    pacs: Pacs | None = None,
    files: ArchiveFiles | None = None,
) -> pa.Table:
    """Ray Data `map_batches` function (batch_format='pyarrow'): refs in, staging rows out
    (and, given a `progress` sink, the batch's rows counted on the driver's console).
    With `pacs`, the rows' paths are PACS locators, fetched inside this task; else files
    read through `files`."""
    rows: list[dict[str, Any]] = batch.to_pylist()
    if progress is not None:
        progress.advance("ingest", len(rows), total)
    pixels = np.zeros((len(rows), size, size), dtype=np.uint8)
    by_path: dict[Location, list[int]] = {}
    for i, row in enumerate(rows):
        by_path.setdefault(parse_location(row["path"]), []).append(i)
    for path, result in decode_paths(list(by_path), pacs, files, size):
        for i in by_path[path]:
            _fill(rows[i], pixels, i, result, size)
    schema = staging_schema(size)
    columns = {name: [row.get(name) for row in rows] for name in schema.names if name != "pixels"}
    columns["pixels"] = encode_pixels(pixels)
    return pa.table({name: columns[name] for name in schema.names}, schema=schema)


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
