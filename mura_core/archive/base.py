"""The `Archive` interface: what every kind of archive does, and the file archives' part.

An archive says what it is (`kind`, `root`), lists its images (`list` → a `Listing`:
references, problems, junk), and reads the bytes of listed images (`read`: per location,
its bytes or the `ImagingError` that says why not). One implementation per kind:

- `MuraArchive`, `DicomTreeArchive`, `FolderArchive` (`FileArchive`s): listed by the one
  walk (`walk.list_files`) with their `FileLister`, read through `ArchiveFiles` (regular
  files inside the root, a byte cap), one file at a time;
- `PacsArchive` over a `Pacs` client: `dicomweb` (QIDO-RS / WADO-RS) or `dimse` (C-FIND /
  C-GET), listed from headers, its batch of instances fetched in one go.

An archive is a small picklable value: a Ray task that decodes gets a copy and reads
through it (a PACS client opens its own connection there).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from mura_core.archive.files import ArchiveFiles
from mura_core.archive.walk import FileLister, list_files
from mura_core.imaging.errors import CorruptFileError, ImagingError
from mura_core.listing import Listing
from mura_core.locations import FileLocation, Location

Read = tuple[Location, bytes | ImagingError]


class Archive(Protocol):
    """One archive, whatever its kind (see the module docstring)."""

    @property
    def kind(self) -> str:
        """mura, dicom, folder, dicomweb or dimse."""
        ...

    @property
    def root(self) -> str:
        """The archive's folder (absolute), or the PACS address (never credentials)."""
        ...

    @property
    def remote(self) -> bool:
        """Whether its bytes come over the network (a PACS): read once, never again."""
        ...

    def list(self) -> Listing: ...

    def read(self, locations: Sequence[Location]) -> Iterator[Read]:
        """Per location, in order, its bytes or why they cannot be had."""
        ...


class NotThisArchiveError(ImagingError):
    """A location another kind of archive holds (a bug: rows read where they were listed)."""

    error_type = "corrupt"


@dataclass(frozen=True)
class FileArchive(ABC):
    """A folder archive of one kind: its files (root and access policy), its labels CSV."""

    files: ArchiveFiles
    labels: Path | None = None
    kind: ClassVar[str]
    remote: ClassVar[bool] = False

    @property
    def root(self) -> str:
        return self.files.root

    @abstractmethod
    def lister(self) -> FileLister:
        """What this kind plugs into the walk (made for one listing)."""

    def list(self) -> Listing:
        return list_files(self.lister())

    def read(self, locations: Sequence[Location]) -> Iterator[Read]:
        """Each file read whole through the archive layer, one at a time (memory: one
        file's bytes); a refused or unreadable file gives its error."""
        for location in locations:
            if not isinstance(location, FileLocation):
                yield location, NotThisArchiveError(f"not a file of {self.root}")
                continue
            try:
                yield location, self.files.read(location.path)
            except ImagingError as exc:
                yield location, exc
            except OSError as exc:
                yield location, CorruptFileError(f"cannot read file: {exc.strerror or exc}")
