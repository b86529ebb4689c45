"""The archive layer: every archive, whatever its kind, opened, listed and read one way.

The recipe, top to bottom:

1. **what SOURCE names** (`source.parse_source`): a PACS address (`dicomweb+http[s]://…`,
   `dimse://…`) or a folder; the only place that asks;
2. **which kind, once** (`kinds.open_archive`): a folder is MURA, a DICOM tree or an image
   folder (detected, or `--kind`), a PACS DICOMweb or DIMSE (by its address, checked at
   once); the result is an `Archive` (`base`), one implementation per kind;
3. **listing** (`Archive.list` → `Listing`): a folder through the one walk
   (`walk.list_files`: walk → skip junk → suffix filter → image or `Problem`), into which
   the MURA, DICOM-tree and folder listers plug what differs; a PACS from headers only;
4. **rows** (`rows.prepare_rows`): one `ImageRow` per listed image, split, its identifiers
   pseudonymized (`pseudonyms`: the one point every input's keys go through), its
   location typed (`mura_core.locations`: a file or a PACS instance);
5. **bytes** (`Archive.read`): files through `ArchiveFiles`, the one way into an archive's
   files — **regular files only** (a FIFO, device or socket is never opened for reading:
   `not_a_regular_file`), **inside the root** (a link whose target leaves the root, or a
   CSV path with `..` or an absolute path, is refused without being looked at:
   `outside_archive`; `AccessPolicy.follow_links` allows outside link targets), **a byte
   cap on every read** (`AccessPolicy.max_bytes`: `too_large`); PACS instances fetched.

Ray is not imported here: `pipelines.archives` runs the decoding in Ray tasks.
"""

from mura_core.archive.base import Archive, FileArchive
from mura_core.archive.files import (
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
from mura_core.archive.kinds import KINDS, detect_kind, list_archive, open_archive
from mura_core.archive.labels import SourceError
from mura_core.archive.source import (
    ArchiveSource,
    FolderSource,
    PacsSource,
    pacs_destination,
    parse_source,
)
from mura_core.archive.summary import PACS_KINDS, format_summary, summarize

__all__ = [
    "DEFAULT_MAX_BYTES",
    "KINDS",
    "PACS_KINDS",
    "AccessPolicy",
    "Archive",
    "ArchiveFiles",
    "ArchiveSource",
    "BadPathError",
    "Entry",
    "FileArchive",
    "FileRefusedError",
    "FileTooLargeError",
    "FolderSource",
    "NotARegularFileError",
    "OutsideArchiveError",
    "PacsSource",
    "SourceError",
    "detect_kind",
    "format_summary",
    "list_archive",
    "open_archive",
    "open_regular",
    "pacs_destination",
    "parse_source",
    "read_regular",
    "summarize",
]
