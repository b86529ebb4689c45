"""What a SOURCE argument names: a folder archive or a PACS. The one place that asks.

`parse_source` turns what a user typed (or a config holds) into an `ArchiveSource`: a
`PacsSource` for `dicomweb+http[s]://…` and `dimse://…` (kept as typed: a `Path` would
fold its `//`; its form is checked when the archive is opened), a `FolderSource` for
anything else. Every other module takes the typed source, or an `Archive` opened from it
(`open_archive`), and never looks at the string again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mura_core.errors import ConfigError
from mura_core.pacs.address import DICOMWEB_SCHEMES, DIMSE_SCHEME, PacsAddress

_PACS_PREFIXES = (*(s + "://" for s in DICOMWEB_SCHEMES), DIMSE_SCHEME + "://")
PACS_FORMS = "dicomweb+http[s]://HOST:PORT/PATH or dimse://AET@HOST:PORT"


def is_pacs_address(text: str | os.PathLike[str]) -> bool:
    """True for `dicomweb+http[s]://…` and `dimse://…` (anything else is a folder)."""
    return str(text).startswith(_PACS_PREFIXES)


@dataclass(frozen=True, slots=True)
class FolderSource:
    """A folder archive (MURA, DICOM tree, image folder, or shards), as given."""

    path: Path

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True, slots=True)
class PacsSource:
    """A PACS, by its address as given (never with credentials)."""

    address: str

    def __str__(self) -> str:
        return self.address

    def parsed(self) -> PacsAddress:
        """The address checked and parsed (a malformed one: a one-line ConfigError)."""
        return PacsAddress.parse(self.address)


ArchiveSource = FolderSource | PacsSource


def parse_source(source: str | os.PathLike[str] | ArchiveSource) -> ArchiveSource:
    """What `source` names: a PACS (by its address's scheme) or a folder."""
    if isinstance(source, FolderSource | PacsSource):
        return source
    if is_pacs_address(source):
        return PacsSource(str(source))
    return FolderSource(Path(source))


def pacs_destination(source: str | os.PathLike[str] | ArchiveSource, dest: str) -> PacsAddress:
    """Where `--write-back` stores results: DEST, or the source PACS when DEST is empty.
    The source must be a PACS: the results carry its listed headers (patient, study)."""
    if not isinstance(parse_source(source), PacsSource):
        raise ConfigError(
            "--write-back stores results into the screened studies of a PACS source "
            "(dicomweb+http://… or dimse://…); this source is a folder"
        )
    text = dest or str(source)
    address = parse_source(text)
    if not isinstance(address, PacsSource):
        raise ConfigError(f"--write-back {text}: not a PACS address ({PACS_FORMS})")
    return address.parsed()
