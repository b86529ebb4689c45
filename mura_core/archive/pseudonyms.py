"""Pseudonyms for every input, made at one point: `pseudonymize_keys`.

Every identifier column of every input row (`image_id`, `study_key`, `patient_key`,
`relpath`, a quarantine row's `path`: `privacy.PSEUDONYM_KINDS`) goes through
`pseudonymize_keys` with the input's `Pseudonyms` (the site's keyed pseudonymizer, or
none: identifiers pass as they are). Where it runs follows where an input's rows are born:

- a listed archive (MURA, DICOM tree, folder, PACS): on the driver, as the listing becomes
  rows (`rows.prepare_rows`), before any row reaches Ray — originals never enter Ray's
  object store, its spill files or a task's log;
- shards (`mura screen SHARDS` of shards ingested without pseudonyms): in the Ray task
  that reads them (`pseudonymize_table`, the step right after the read), since the driver
  never holds shard rows; the shards hold these originals on disk already, so reading them
  there exposes nothing new. The driver makes the same pseudonyms for the
  re-identification map from the key columns alone.

Whether a listed archive is pseudonymized is decided in one place too
(`should_pseudonymize`: `--pseudonymize auto` means the DICOM kinds); shards are, unless
ingest pseudonymized them already or screening runs with `--pseudonymize never`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from mura_core.errors import ConfigError
from mura_core.privacy import Pseudonymizer, pseudonym_columns, pseudonymize_keys

PSEUDONYMIZE_CHOICES = ("auto", "always", "never")
DICOM_KINDS = ("dicom", "dicomweb", "dimse")  # what "auto" pseudonymizes


def should_pseudonymize(kind: str, mode: str) -> bool:
    """`always`, `never`, or `auto`: the DICOM kinds (their headers hold real identifiers)."""
    if mode not in PSEUDONYMIZE_CHOICES:
        raise ConfigError(f"pseudonymize must be one of {', '.join(PSEUDONYMIZE_CHOICES)}")
    return mode == "always" or (mode == "auto" and kind in DICOM_KINDS)


class Pseudonyms:
    """One input's pseudonyms: each (kind, original) made once and remembered for the
    re-identification map; without a pseudonymizer, identifiers pass as they are."""

    def __init__(self, pseudonymizer: Pseudonymizer | None) -> None:
        self.pseudonymizer = pseudonymizer
        self.seen: dict[tuple[str, str], str] = {}

    @classmethod
    def of_input(
        cls, kind: str, mode: str, pseudonymizer: Pseudonymizer | None = None
    ) -> Pseudonyms:
        """An input of `kind` under `--pseudonymize mode` (the site's key when enabled)."""
        if not should_pseudonymize(kind, mode):
            return cls(None)
        return cls(pseudonymizer or Pseudonymizer.from_site())

    @property
    def enabled(self) -> bool:
        return self.pseudonymizer is not None

    def __call__(self, value: str, kind: str) -> str:
        if self.pseudonymizer is None:
            return value
        key = (kind, value)
        if key not in self.seen:
            self.seen[key] = self.pseudonymizer(value, kind)
        return self.seen[key]

    def keys(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """`values` (a row's columns) with its identifier columns pseudonymized."""
        return pseudonymize_keys(values, self)

    def reidentify(self) -> list[tuple[str, str, str]]:
        """(kind, pseudonym, original) for every identifier pseudonymized so far."""
        return [(kind, pseudonym, value) for (kind, value), pseudonym in sorted(self.seen.items())]


def pseudonymize_table(table: pa.Table, *, pseudonymizer: Pseudonymizer) -> pa.Table:
    """A Ray Data batch (shard rows) with its identifier columns pseudonymized, row by row
    through `pseudonymize_keys` (a Ray `map_batches` function: runs where the rows are)."""
    pseudonyms = Pseudonyms(pseudonymizer)
    names = list(pseudonym_columns(table.column_names))
    if not names:
        return table
    rows = [pseudonyms.keys(row) for row in table.select(names).to_pylist()]
    for name in names:
        column = pa.array([row[name] for row in rows], type=pa.string())
        table = table.set_column(table.column_names.index(name), name, column)
    return table
