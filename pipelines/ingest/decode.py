"""The Ray Data UDF: read and decode a batch of image references, one row out per row in.

Every row comes out, either with pixels (status 'ok') or with its problem (status
'quarantined', pixels zero): errors are caught per row here, never by dropping blocks, so
found = ingested + quarantined holds by construction and is checked again at the end.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from mura_core import imaging
from mura_core.shards import image_schema

OK, QUARANTINED = "ok", "quarantined"
PROBLEM_TYPE = pa.struct([("error_type", pa.string()), ("reason", pa.string())])


def staging_schema(size: int) -> pa.Schema:
    """Image columns, plus `problem` (null when ok) and `status` (the write partition)."""
    return (
        image_schema(size)
        .append(pa.field("problem", PROBLEM_TYPE))
        .append(pa.field("status", pa.string()))
    )


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


def decode_batch(batch: pa.Table, *, size: int) -> pa.Table:
    """Ray Data `map_batches` function (batch_format='pyarrow'): refs in, staging rows out."""
    rows: list[dict[str, Any]] = batch.to_pylist()
    n = len(rows)
    pixels = np.zeros((n, size, size), dtype=np.uint8)
    cache: dict[str, imaging.Decoded | imaging.ImagingError] = {}
    columns: dict[str, list[Any]] = {
        k: [] for k in ("orig_height", "orig_width", "windowing", "inverted", "problem", "status")
    }
    for i, row in enumerate(rows):
        result = _decode_one(row["path"], cache)
        problem = None
        if isinstance(result, imaging.Decoded):
            try:
                pixels[i] = imaging.select_frame(result, int(row["frame"] or 0), size)
            except imaging.ImagingError as exc:
                problem = exc
        else:
            problem = result
        if problem is None:
            info = result.info
            values = (info.height, info.width, info.windowing, info.inverted, None, OK)
        else:
            values = (
                None,
                None,
                None,
                None,
                {"error_type": problem.error_type, "reason": problem.reason},
                QUARANTINED,
            )
        for key, value in zip(columns, values, strict=True):
            columns[key].append(value)
    schema = staging_schema(size)
    data = {
        name: [row.get(name) for row in rows]
        for name in schema.names
        if name not in columns and name != "pixels"
    }
    data.update(columns)
    data["pixels"] = pa.FixedShapeTensorArray.from_numpy_ndarray(pixels)
    return pa.table({name: data[name] for name in schema.names}, schema=schema)
