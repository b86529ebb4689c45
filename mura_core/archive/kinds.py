"""Which kind an archive is, decided in one place: `open_archive`.

A SOURCE is a PACS address or a folder (`source.parse_source`). A PACS is opened with its
client (`pacs_archive.open_pacs`: DICOMweb or DIMSE by the address, checked at once). A
folder is MURA when it has the MURA layout, else a DICOM tree or an image folder by what
its files are (`detect_kind`), unless `kind` says; its archive reads every file through
`ArchiveFiles` (the `AccessPolicy`: regular files only, inside the root, a read cap).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from mura_core.archive import mura
from mura_core.archive.base import Archive, FileArchive
from mura_core.archive.dicom_tree import DicomTreeArchive, sniff_dicom
from mura_core.archive.files import AccessPolicy, ArchiveFiles
from mura_core.archive.folder import FolderArchive
from mura_core.archive.labels import SourceError, require_dir
from mura_core.archive.source import ArchiveSource, PacsSource, parse_source
from mura_core.imaging import IMAGE_SUFFIXES
from mura_core.listing import Listing

if TYPE_CHECKING:  # the PACS modules (clients, result classes) load when a PACS is opened
    from mura_core.pacs.client import PacsOptions

FILE_ARCHIVES: dict[str, type[FileArchive]] = {
    archive.kind: archive for archive in (mura.MuraArchive, DicomTreeArchive, FolderArchive)
}
KINDS: tuple[str, ...] = tuple(FILE_ARCHIVES)  # what `--kind` may name
_SNIFF_LIMIT = 5000


def detect_kind(root: str | Path, access: AccessPolicy | None = None) -> str:
    """'mura' for the MURA layout, else 'dicom' or 'folder' by what the files are.

    A tree holding both DICOM and PNG/JPEG files is ambiguous: refuse and ask for a kind,
    rather than silently ignore half of it.
    """
    path = require_dir(root)
    if mura.find_root(path) is not None:
        return "mura"
    files = ArchiveFiles.at(path, access)
    dicom = images = 0
    for seen, entry in enumerate(files.walk()):
        if seen >= _SNIFF_LIMIT:
            break
        if not entry.usable:
            continue
        if entry.path.name.lower().endswith(IMAGE_SUFFIXES):
            images += 1
        elif sniff_dicom(files, entry.path):
            dicom += 1
    if dicom and images:
        raise SourceError(
            f"{path} holds both DICOM ({dicom}) and PNG/JPEG ({images}) files: "
            "choose one with --kind dicom|folder"
        )
    if dicom:
        return "dicom"
    if images:
        return "folder"
    raise SourceError(f"{path}: no images found (no MURA layout, DICOM, PNG or JPEG files)")


def open_archive(
    source: str | os.PathLike[str] | ArchiveSource,
    *,
    kind: str | None = None,
    labels: str | os.PathLike[str] | None = None,
    access: AccessPolicy | None = None,
    pacs: PacsOptions | None = None,
) -> Archive:
    """The archive `source` names, of `kind` (None: detected), checked and ready to list:
    a folder exists (and its labels file), a PACS answered. `access` applies to a folder,
    `pacs` (credentials, AE title, query, retries) to a PACS."""
    parsed = parse_source(source)
    if isinstance(parsed, PacsSource):
        if kind is not None:
            raise SourceError(f"{parsed} is a PACS: --kind does not apply")
        from mura_core.archive.pacs_archive import open_pacs
        from mura_core.pacs.client import PacsOptions

        named = Path(labels) if labels is not None else None
        return open_pacs(parsed, pacs or PacsOptions(), named)
    root = require_dir(parsed.path)
    kind = kind or detect_kind(root, access)
    labels_path = Path(labels).expanduser().resolve() if labels is not None else None
    if labels_path is not None and not labels_path.is_file():
        raise SourceError(f"labels file not found: {labels_path}")
    archive = FILE_ARCHIVES.get(kind)
    if archive is None:
        raise SourceError(f"unknown source kind {kind!r}: choose one of {', '.join(KINDS)}")
    return archive(ArchiveFiles.at(root, access), labels_path)


def list_archive(
    source: str | os.PathLike[str] | ArchiveSource,
    *,
    kind: str | None = None,
    labels: str | os.PathLike[str] | None = None,
    access: AccessPolicy | None = None,
    pacs: PacsOptions | None = None,
) -> Listing:
    """List an archive's image references (`open_archive`, then `Archive.list`)."""
    return open_archive(source, kind=kind, labels=labels, access=access, pacs=pacs).list()
