"""The Ray Data UDF: read and decode a batch of image references, one row out per row in.

Every row comes out, either with pixels (`problem` null) or with its problem (pixels zero):
errors are caught per row here, never by dropping blocks, so found = ingested + quarantined
holds by construction and is checked again at the end.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from mura_core import imaging
from mura_core.shards import encode_pixels, image_schema

from ..progress import ProgressSink

PROBLEM_TYPE = pa.struct([("error_type", pa.string()), ("reason", pa.string())])
_DECODED = ("orig_height", "orig_width", "windowing", "inverted")


def staging_schema(size: int) -> pa.Schema:
    """Image columns plus `problem`: null for a decoded image, else why it is quarantined."""
    return image_schema(size).append(pa.field("problem", PROBLEM_TYPE))


def _decode_one(
    path: str, cache: dict[str, imaging.Decoded | imaging.ImagingError]
) -> imaging.Decoded | imaging.ImagingError:
    """Decode a file once per batch (a multi-frame file has one row per frame)."""
    if path not in cache:
        try:
            cache[path] = imaging.decode(path)
        except imaging.ImagingError as exc:
            cache[path] = exc
        except Exception as exc:  # a decoder bug must not cost the other rows of the batch
            cache[path] = imaging.ImagingError(f"unexpected {type(exc).__name__}: {exc}")
    return cache[path]


def decode_batch(
    batch: pa.Table, *, size: int, progress: ProgressSink | None = None, total: int = 0
) -> pa.Table:
    """Ray Data `map_batches` function (batch_format='pyarrow'): refs in, staging rows out
    (and, given a `progress` sink, the batch's rows counted on the driver's console)."""
    rows: list[dict[str, Any]] = batch.to_pylist()
    if progress is not None:
        progress.advance("ingest", len(rows), total)
    pixels = np.zeros((len(rows), size, size), dtype=np.uint8)
    cache: dict[str, imaging.Decoded | imaging.ImagingError] = {}
    for i, row in enumerate(rows):
        result = _decode_one(row["path"], cache)
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
