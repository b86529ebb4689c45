"""The screening actor (kept out of `pipelines.screen`, whose imports — MLflow, plots — would
slow every actor start): scores decoded rows, passes problems through, one schema out. Its
rows' keys are pseudonyms already (`mura_core.archive.pseudonyms`).

Rows come either from shards (every row has pixels) or from on-the-fly decoding (rows with
a `problem` carry zero pixels and are not scored). Every row comes out with the same
explicit schema, so blocks always concatenate, whatever mix of labels and problems they hold.
A PACS screening's rows also carry `kept` (each frame at the pictures' size, for the
evidence pass after scoring: `pipelines.screen.evidence`); it is passed through, last.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mura_core.monitoring.inputs import pixel_stats
from mura_core.records import Failure, ScoredImage
from mura_core.schema import arrow_schema, column_names
from mura_core.shards import KEPT_PIXELS, pixels_array
from pipelines.shards.predict import Predictor

# one row per image: a `ScoredImage`'s columns, then a `Failure`'s (null where it scored)
IMAGE_SCHEMA = arrow_schema(ScoredImage, Failure)


class ScreenPredictor(Predictor):
    """Predictor for screening: tolerant of problem rows."""

    def __call__(self, batch: pa.Table) -> pa.Table:  # type: ignore[override]
        n = batch.num_rows
        names = batch.column_names
        columns: dict[str, Any] = {}
        for field in IMAGE_SCHEMA:
            if field.name in names:
                columns[field.name] = batch.column(field.name).cast(field.type)
            else:
                columns[field.name] = pa.nulls(n, field.type)
        if "problem" in names:
            problem = batch.column("problem").combine_chunks()
            ok = np.asarray(pc.is_null(problem).to_numpy(zero_copy_only=False), dtype=bool)
            for name in column_names(Failure):
                columns[name] = pc.struct_field(problem, name)
        else:
            ok = np.ones(n, dtype=bool)
        prob = np.zeros(n, dtype=np.float64)
        mean, std = np.zeros(n), np.zeros(n)
        if ok.any():
            pixels = pixels_array(batch.column("pixels"))[ok]
            prob[ok] = self.score(pixels)
            mean[ok], std[ok] = pixel_stats(pixels)
        columns["prob"] = pa.array(prob, mask=~ok)
        columns["pixel_mean"] = pa.array(mean, mask=~ok).cast(pa.float32())
        columns["pixel_std"] = pa.array(std, mask=~ok).cast(pa.float32())
        table = pa.table([columns[f.name] for f in IMAGE_SCHEMA], schema=IMAGE_SCHEMA)
        return (
            table.append_column(KEPT_PIXELS, batch.column(KEPT_PIXELS))
            if KEPT_PIXELS in names
            else table
        )
