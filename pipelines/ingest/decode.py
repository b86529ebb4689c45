"""The Ray Data UDF: read and decode a batch of image references, one row out per row in.

Every row comes out, either with pixels (`problem` null) or with its problem (pixels zero):
errors are caught per row here, never by dropping blocks, so found = ingested + quarantined
holds by construction and is checked again at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa

from mura_core import imaging
from mura_core.pacs.client import Locator, Pacs
from mura_core.shards import encode_pixels, image_schema

from ..progress import ProgressSink

PROBLEM_TYPE = pa.struct([("error_type", pa.string()), ("reason", pa.string())])
_DECODED = ("orig_height", "orig_width", "windowing", "inverted")


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


def decode_paths(
    paths: list[str], pacs: Pacs | None = None
) -> dict[str, imaging.Decoded | imaging.ImagingError]:
    """Decode each path once (a multi-frame file has one row per frame): files from disk,
    or, for a PACS source, instances fetched by their locators (one request or association
    for the batch), whose bytes `mura_core.imaging` decodes exactly as a file's."""
    unique = list(dict.fromkeys(paths))
    if pacs is None:
        return {p: _guarded(partial(imaging.decode, p)) for p in unique}
    fetched = pacs.fetch([Locator.parse(p) for p in unique])
    return {
        p: data
        if isinstance(data := fetched[Locator.parse(p)], imaging.ImagingError)
        else _guarded(partial(imaging.decode_bytes, data, "instance.dcm"))
        for p in unique
    }


def decode_batch(
    batch: pa.Table,
    *,
    size: int,
    progress: ProgressSink | None = None,
    total: int = 0,
    pacs: Pacs | None = None,
) -> pa.Table:
    """Ray Data `map_batches` function (batch_format='pyarrow'): refs in, staging rows out
    (and, given a `progress` sink, the batch's rows counted on the driver's console).
    With `pacs`, the rows' paths are PACS locators, fetched inside this task."""
    rows: list[dict[str, Any]] = batch.to_pylist()
    if progress is not None:
        progress.advance("ingest", len(rows), total)
    pixels = np.zeros((len(rows), size, size), dtype=np.uint8)
    decoded = decode_paths([row["path"] for row in rows], pacs)
    for i, row in enumerate(rows):
        result = decoded[row["path"]]
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
                continue
            except imaging.ImagingError as exc:
                result = exc
        row.update(
            dict.fromkeys(_DECODED),
            problem={"error_type": result.error_type, "reason": result.reason},
        )
    schema = staging_schema(size)
    columns = {name: [row.get(name) for row in rows] for name in schema.names if name != "pixels"}
    columns["pixels"] = encode_pixels(pixels)
    return pa.table({name: columns[name] for name in schema.names}, schema=schema)
