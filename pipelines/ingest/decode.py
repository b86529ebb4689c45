"""The Ray Data UDF: read and decode a batch of image references, one row out per row in.

Every row comes out, either with pixels (`problem` null) or with its problem (pixels zero):
errors are caught per row here, never by dropping blocks, so found = ingested + quarantined
holds by construction and is checked again at the end.

Files are read through the archive layer (`ArchiveFiles`: regular files inside the root, a
read cap), PACS instances fetched for the whole batch. Memory stays bounded: one file is
decoded at a time, at a working size of twice the output (`WORK_FACTOR`), and reduced to
its rows' size x size frames before the next; a batch holds at most `BATCH_PIXELS` output
pixels (`rows_per_batch`).

Screening a PACS also asks for a second copy of each frame, `keep` px on a side (the
`kept` column), made from the same decoded image as the model's pixels: the report's
pictures and the Secondary Captures are made from it later, so no instance is fetched twice.
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
from mura_core.pacs.client import Locator, Pacs
from mura_core.records import DecodedImage, Failure
from mura_core.schema import arrow_schema, column_names
from mura_core.shards import KEPT_PIXELS, encode_pixels, image_schema

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
    path: str,
    files: ArchiveFiles | None,
    fetched: dict[Locator, bytes | imaging.ImagingError] | None,
) -> Callable[[], bytes]:
    """How to get one input's bytes: a PACS instance already fetched, or a file read
    through the archive layer (`files`; None: a file given by hand, read with the cap)."""
    if fetched is not None:

        def from_pacs() -> bytes:
            data = fetched[Locator.parse(path)]
            if isinstance(data, imaging.ImagingError):
                raise data
            return data

        return from_pacs
    if files is not None:
        return partial(files.read, path)
    return partial(read_regular, path, max_bytes=DEFAULT_MAX_BYTES)


def _decode_one(
    read: Callable[[], bytes], name: str, size: int | None
) -> imaging.Decoded | imaging.ImagingError:
    """Read and decode one input (at a working size for `size`), or the reason it fails."""
    work = None if size is None else WORK_FACTOR * size
    return _guarded(lambda: imaging.decode_bytes(read(), name, work_side=work))


def decode_paths(
    paths: list[str],
    pacs: Pacs | None = None,
    files: ArchiveFiles | None = None,
    size: int | None = None,
) -> Iterator[tuple[str, imaging.Decoded | imaging.ImagingError]]:
    """Each path decoded once, one at a time (a multi-frame file has one row per frame):
    files through the archive layer, or, for a PACS source, instances fetched by their
    locators (one request or association for the batch), whose bytes `mura_core.imaging`
    decodes exactly as a file's."""
    unique = list(dict.fromkeys(paths))
    fetched = pacs.fetch([Locator.parse(p) for p in unique]) if pacs is not None else None
    for path in unique:
        name = "instance.dcm" if pacs is not None else path
        yield path, _decode_one(_reader(path, files, fetched), name, size)


def decode_batch(
    batch: pa.Table,
    *,
    size: int,
    progress: ProgressSink | None = None,
    total: int = 0,
    pacs: Pacs | None = None,
    files: ArchiveFiles | None = None,
    keep: int | None = None,
) -> pa.Table:
    """Ray Data `map_batches` function (batch_format='pyarrow'): refs in, staging rows out
    (and, given a `progress` sink, the batch's rows counted on the driver's console).
    With `pacs`, the rows' paths are PACS locators, fetched inside this task; else files
    read through `files`. With `keep`, each row also carries its frame at keep x keep
    (`kept`, zero where the row failed), from the same decode."""
    rows: list[dict[str, Any]] = batch.to_pylist()
    if progress is not None:
        progress.advance("ingest", len(rows), total)
    pixels = np.zeros((len(rows), size, size), dtype=np.uint8)
    kept = np.zeros((len(rows), keep, keep), dtype=np.uint8) if keep else None
    by_path: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_path.setdefault(row["path"], []).append(i)
    for path, result in decode_paths(list(by_path), pacs, files, size):
        for i in by_path[path]:
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
