"""The one way into an archive's files: what may be opened, how, and how much of it.

Every command that reads an archive (listing, ingest, screening, nightly, inspect) walks,
locates and reads its files through an `ArchiveFiles` (an archive root and an
`AccessPolicy`), never with `open()` or `Path.read_bytes()` of its own:

- **regular files only**: a FIFO, device or socket is never opened for reading (a FIFO
  would block the reader forever); it becomes a problem row `not_a_regular_file`;
- **inside the root**: a link is followed only while its target stays inside the archive
  root (`AccessPolicy.follow_links` allows outside targets); a path from a CSV that leaves
  the root (`..`, an absolute path) is refused without being looked at: `outside_archive`;
- **a byte cap on every read** (`AccessPolicy.max_bytes`): `too_large`.

This is the start of the archive layer: the sources (MURA, DICOM tree, image folder, PACS)
get their common interface on top of it later.
"""

from .files import (
    DEFAULT_MAX_BYTES,
    AccessPolicy,
    ArchiveFiles,
    BadPathError,
    Entry,
    FileRefusedError,
    FileTooLargeError,
    NotARegularFileError,
    OutsideArchiveError,
    open_regular,
    read_regular,
)
from .kinds import KINDS, PACS_KINDS, detect_kind, format_summary, list_source, summarize
from .labels import SourceError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "KINDS",
    "PACS_KINDS",
    "SourceError",
    "detect_kind",
    "format_summary",
    "list_source",
    "summarize",
    "AccessPolicy",
    "ArchiveFiles",
    "BadPathError",
    "Entry",
    "FileRefusedError",
    "FileTooLargeError",
    "NotARegularFileError",
    "OutsideArchiveError",
    "open_regular",
    "read_regular",
]
