"""Pins for the on-disk schemas: tests/data/schemas/*.parquet, written once by the code of
before (when each schema was written out by hand), one small file per table.

A schema derived from the records (`mura_core.schema`) that equals the one such a file was
written with writes the same Parquet: the same columns, order, Arrow and Parquet types.
"""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMAS = Path(__file__).parent / "data" / "schemas"


def assert_writes_as_before(schema: pa.Schema, name: str) -> None:
    """`schema` equals the one `name`.parquet was written with, down to the Parquet types."""
    before = SCHEMAS / f"{name}.parquet"
    assert schema.equals(pq.read_schema(before), check_metadata=True), name
    buffer = io.BytesIO()
    pq.write_table(pq.read_table(before).cast(schema), buffer)
    assert pq.ParquetFile(buffer).schema.equals(pq.ParquetFile(before).schema), name
