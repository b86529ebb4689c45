"""Where an image's bytes are: a file, or an instance in a PACS. Never a string meaning either.

An `ImageRef` (and the `ImageRow` made from it) carries a `Location`:

- `FileLocation`: a file of a folder archive, by its path (made absolute: a Ray worker
  reads it whatever its working folder);
- `PacsInstance`: an instance of a PACS, by the UIDs WADO-RS and C-GET fetch it by
  (study, series, SOP instance; C-GET also needs its SOP class).

Rows become Arrow (Ray Data's `from_items`) with the location as one string column, `path`
(`location_column`), and come back from it in the task that reads the bytes
(`parse_location`): a file is its absolute path, an instance `STUDY/SERIES/SOP/CLASS`.
The two never meet: a file's path starts with `/`, an instance's UIDs (`addressable`:
letters, digits, `.`, `_`, `-`) never do and never hold a `/`. The column is never
written to a shard, a report or a log.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

_ADDRESSABLE_UID = re.compile(r"[0-9A-Za-z._-]+")


def addressable(uid: str) -> bool:
    """Whether a UID can name a resource in a DICOMweb URL and in a `PacsInstance`.
    Conformant UIDs are digits and dots, and a PACS holds what it was sent: hex digests
    pass; '/', '@', '#', spaces or nothing at all do not (such a study or instance is
    skipped, and counted)."""
    return _ADDRESSABLE_UID.fullmatch(uid) is not None


@dataclass(frozen=True, slots=True)
class FileLocation:
    """A file of a folder archive (read through its `ArchiveFiles`)."""

    path: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", os.path.abspath(os.fspath(self.path)))

    def __str__(self) -> str:
        return self.path


@dataclass(frozen=True, slots=True)
class PacsInstance:
    """An instance of a PACS: the UIDs WADO-RS and C-GET need (C-GET also its SOP class)."""

    study: str
    series: str
    sop: str
    sop_class: str

    def __post_init__(self) -> None:
        for uid in (self.study, self.series, self.sop, self.sop_class):
            if not addressable(uid):
                raise ValueError(f"a UID no request can name: {uid!r}")

    def __str__(self) -> str:
        return f"{self.study}/{self.series}/{self.sop}/{self.sop_class}"

    @classmethod
    def of(cls, header: Dataset) -> PacsInstance:
        return cls(
            str(header.StudyInstanceUID),
            str(header.SeriesInstanceUID),
            str(header.SOPInstanceUID),
            str(header.SOPClassUID),
        )


Location = FileLocation | PacsInstance


def location_column(location: Location) -> str:
    """The `path` column's string for a location (see the module docstring)."""
    return str(location)


def parse_location(text: str) -> Location:
    """A location back from its `path` column string; ValueError for anything else."""
    if os.path.isabs(text):
        return FileLocation(text)
    parts = text.split("/")
    if len(parts) != 4:
        raise ValueError(f"neither an absolute file path nor a PACS instance: {text!r}")
    return PacsInstance(*parts)
