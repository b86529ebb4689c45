"""Arrow schemas made from the records (`mura_core.schema`); the shard and quarantine
schemas pinned to files the code of before wrote (`tests.schemas`)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from enum import StrEnum

import pyarrow as pa
import pytest

from mura_core.records import DecodedImage, Failure, ImageRow, QuarantineRow, ScoredImage
from mura_core.schema import Float32, Int8, Int32, arrow_schema, column_names, not_written
from mura_core.shards import IMAGE_COLUMNS, QUARANTINE_SCHEMA, image_columns, image_schema
from tests.schemas import assert_writes_as_before


def test_shard_and_quarantine_schemas_are_those_of_before() -> None:
    assert_writes_as_before(image_schema(4), "shard_images")
    assert_writes_as_before(QUARANTINE_SCHEMA, "quarantine")


class Colour(StrEnum):
    RED = "red"


@dataclass(frozen=True, slots=True)
class Example:
    path: str = not_written()
    name: str
    colour: Colour | None
    small: Int8 | None
    count: Int32
    big: int
    ratio: Float32
    score: float | None
    flag: bool
    blob: bytes


def test_hints_say_the_arrow_types_and_every_field_is_nullable() -> None:
    schema = arrow_schema(Example, types={"blob": pa.binary(4)})
    expected = pa.schema(
        [
            ("name", pa.string()),
            ("colour", pa.string()),
            ("small", pa.int8()),
            ("count", pa.int32()),
            ("big", pa.int64()),
            ("ratio", pa.float32()),
            ("score", pa.float64()),
            ("flag", pa.bool_()),
            ("blob", pa.binary(4)),
        ]
    )
    assert schema.equals(expected, check_metadata=True)
    assert all(f.nullable for f in schema)
    assert column_names(Example) == tuple(expected.names)


def test_a_hint_without_an_arrow_type_or_a_type_for_no_column_is_refused() -> None:
    @dataclass(frozen=True)
    class Listed:
        names: list[str]

    with pytest.raises(TypeError, match="no Arrow type"):
        arrow_schema(Listed)
    with pytest.raises(ValueError, match="path"):
        arrow_schema(Example, types={"path": pa.string()})


def test_several_records_make_one_schema_in_order() -> None:
    assert column_names(ImageRow) + column_names(DecodedImage) == IMAGE_COLUMNS
    assert "path" not in IMAGE_COLUMNS and IMAGE_COLUMNS[-1] == "pixels"
    scored = arrow_schema(ScoredImage, Failure)
    assert scored.names[-2:] == ["error_type", "reason"]
    assert QUARANTINE_SCHEMA.names == list(column_names(QuarantineRow))


def test_a_projection_names_shard_columns_only() -> None:
    assert image_columns("pixels", "split") == ["pixels", "split"]
    with pytest.raises(ValueError, match="pixel"):
        image_columns("pixel", "split")


def test_the_records_import_without_pyarrow() -> None:
    code = "import sys, mura_core.records; print('pyarrow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
