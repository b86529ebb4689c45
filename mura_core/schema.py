"""Arrow schemas made from frozen dataclasses: a table's columns are declared once, as a record.

A record's fields, in order, are the table's columns, and each field's type hint says its
Arrow type: `str` (a `StrEnum` too) → string, `int` → int64, `float` → float64, `bool` →
bool, `bytes` → binary; `X | None` is X. Arrow types a Python hint cannot say are written
with `Annotated` aliases defined here (`Int8`, `Int32`, `Float32`); a type known only when
the table is made (the pixels' fixed-size binary, whose width is the shard size) is passed
then, by name (`arrow_schema(..., types={"pixels": ...})`). A field that is no column (an
`ImageRow`'s `path`: read, never written) says so with `not_written()`.

Every Arrow field is nullable, as in every table written so far: a hint's `| None` says
what the record allows, not what Parquet stores, so the files stay the same to the byte.

Several records may make one schema (`arrow_schema(ImageRow, DecodedImage)`: the shard
rows); `column_names` gives the names without building the schema. pyarrow is imported
only when a schema is made, so the records themselves stay light to import (the CLI
imports them at start).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Mapping
from types import UnionType
from typing import TYPE_CHECKING, Annotated, Any, Union

if TYPE_CHECKING:
    import pyarrow as pa

_NOT_WRITTEN = "mura.not_written"


@dataclasses.dataclass(frozen=True, slots=True)
class ArrowType:
    """An Arrow type by its pyarrow factory's name (`int8`), for an `Annotated` hint."""

    name: str

    def make(self) -> pa.DataType:
        import pyarrow as pa

        return getattr(pa, self.name)()


Int8 = Annotated[int, ArrowType("int8")]
Int32 = Annotated[int, ArrowType("int32")]
Float32 = Annotated[float, ArrowType("float32")]

# plain hints, looked up along the class's MRO (bool before int: bool is an int)
_PLAIN: dict[type, ArrowType] = {
    bool: ArrowType("bool_"),
    str: ArrowType("string"),
    int: ArrowType("int64"),
    float: ArrowType("float64"),
    bytes: ArrowType("binary"),
}


def not_written() -> Any:
    """A dataclass field that is no column of the record's table."""
    return dataclasses.field(metadata={_NOT_WRITTEN: True})


def _columns(record: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(record) if not f.metadata.get(_NOT_WRITTEN)]


def column_names(*records: type) -> tuple[str, ...]:
    """The column names of the records' table, in order (no pyarrow needed)."""
    return tuple(f.name for record in records for f in _columns(record))


def arrow_type(hint: Any) -> ArrowType:
    """The Arrow type a field's (resolved) type hint says; TypeError for one it cannot."""
    if typing.get_origin(hint) is Annotated:
        found = [m for m in hint.__metadata__ if isinstance(m, ArrowType)]
        return found[0] if found else arrow_type(typing.get_args(hint)[0])
    if typing.get_origin(hint) in (Union, UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return arrow_type(args[0])
    for klass in getattr(hint, "__mro__", ()):
        if klass in _PLAIN:
            return _PLAIN[klass]
    raise TypeError(f"no Arrow type for the hint {hint!r}: annotate it (schema.Int32, …)")


def arrow_schema(*records: type, types: Mapping[str, pa.DataType] | None = None) -> pa.Schema:
    """The Arrow schema of the records' columns, in order; `types` by name overrides."""
    import pyarrow as pa

    given = dict(types or {})
    fields: list[pa.Field] = []
    for record in records:
        hints = typing.get_type_hints(record, include_extras=True)
        for f in _columns(record):
            dtype = given.pop(f.name, None) or arrow_type(hints[f.name]).make()
            fields.append(pa.field(f.name, dtype))
    if given:
        raise ValueError(f"types for no column: {sorted(given)}")
    return pa.schema(fields)


def projection(available: Iterable[str], *names: str) -> list[str]:
    """`names`, checked to be columns among `available`: a read of chosen columns."""
    columns = set(available)
    missing = [n for n in names if n not in columns]
    if missing:
        raise ValueError(f"not columns of the table: {missing}")
    return list(names)
