"""The one listing loop of a file archive: walk → skip → suffix filter → image or Problem →
`Listing`.

Every file below the walked folders ends in exactly one place: an image reference (one per
frame), a problem with its reason, or the junk count. The loop is the same for every kind
(`list_files`); a kind plugs in what differs as a `FileLister`:

- `below`: the folders walked (MURA: its split folders; others: the root);
- `known_problems`: what its labels CSVs said before the walk (said first);
- `is_own`: a file of the archive that is no input and not counted (its `labels.csv`);
- `is_junk`: files counted as junk beside macOS/Windows junk (documentation, side cars);
- `suffixes` and `wrong_suffix`: which names may be images, and the problem of another;
- `image`: what a usable file becomes (its references, or its problem);
- `settle`, `notes`, `accessions`: the listing's last word (labels that disagree, what
  was used, each study's AccessionNumber).

A lister is made for one listing and may remember what it saw (the DICOM tree's instance
UIDs, accession numbers).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from mura_core.archive.files import ArchiveFiles, Entry
from mura_core.archive.labels import DOC_SUFFIXES
from mura_core.listing import ImageRef, Listing, Problem


class FileLister(ABC):
    """What one kind of file archive plugs into `list_files` (see the module docstring)."""

    kind: str
    suffixes: tuple[str, ...] | None = None  # None: any name may be an image

    def __init__(self, files: ArchiveFiles) -> None:
        self.files = files

    def below(self) -> Iterable[Path]:
        return (Path(self.files.root),)

    def known_problems(self) -> Sequence[Problem]:
        return ()

    def is_own(self, entry: Entry) -> bool:
        return False

    def is_junk(self, entry: Entry) -> bool:
        return entry.path.name.lower().endswith(DOC_SUFFIXES)

    def wrong_suffix(self, entry: Entry) -> Problem:
        return Problem(
            entry.rel,
            "list",
            "not_an_image",
            f"not a PNG/JPEG file ({entry.path.suffix or 'no suffix'})",
        )

    @abstractmethod
    def image(self, entry: Entry) -> Sequence[ImageRef] | Problem:
        """A usable file's references (one per frame), or why it is not an image."""

    def settle(self, refs: Sequence[ImageRef]) -> tuple[tuple[ImageRef, ...], list[Problem]]:
        """The references as listed, and problems found only once all are known."""
        return tuple(refs), []

    def notes(self) -> tuple[str, ...]:
        return ()

    def accessions(self) -> Mapping[str, str]:
        return {}


def list_files(lister: FileLister) -> Listing:
    """The one loop: every walked file → a reference, a problem, or junk."""
    refs: list[ImageRef] = []
    problems = list(lister.known_problems())
    junk = 0
    for folder in lister.below():
        for entry in lister.files.walk(folder):
            if lister.is_own(entry):
                continue
            if entry.problem is not None:
                problems.append(entry.problem)
            elif entry.junk or lister.is_junk(entry):
                junk += 1
            elif lister.suffixes is not None and not _has_suffix(entry, lister.suffixes):
                problems.append(lister.wrong_suffix(entry))
            elif isinstance(found := lister.image(entry), Problem):
                problems.append(found)
            else:
                refs.extend(found)
    settled, late = lister.settle(refs)
    return Listing(
        kind=lister.kind,
        root=lister.files.root,
        refs=settled,
        problems=tuple(problems + late),
        junk_skipped=junk,
        notes=lister.notes(),
        accessions=lister.accessions(),
    )


def _has_suffix(entry: Entry, suffixes: tuple[str, ...]) -> bool:
    return entry.path.name.lower().endswith(suffixes)
