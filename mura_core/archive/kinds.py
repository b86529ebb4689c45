"""Find the images of an archive: MURA-v1.1, a DICOM tree, or a plain image folder.

`list_source` detects the kind (or takes it), and returns a `Listing` in which every file
below the root is accounted for: an image reference, a problem with its reason, or junk.
Every lister walks and opens the archive through `mura_core.archive` (regular files only,
inside the root, a read cap: the `AccessPolicy`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..imaging import IMAGE_SUFFIXES
from ..records import Listing, part_order
from . import mura
from .dicom_tree import list_dicom, sniff_dicom
from .files import AccessPolicy, ArchiveFiles
from .folder import list_folder
from .labels import SourceError, require_dir

KINDS: tuple[str, ...] = ("mura", "dicom", "folder")
PACS_KINDS: tuple[str, ...] = ("dicomweb", "dimse")  # a listing's kind when read from a PACS
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


def list_source(
    root: str | Path,
    *,
    kind: str | None = None,
    labels: str | Path | None = None,
    access: AccessPolicy | None = None,
) -> Listing:
    """List an archive's image references; `kind` None means detect it."""
    path = require_dir(root)
    kind = kind or detect_kind(path, access)
    labels_path = Path(labels).expanduser().resolve() if labels is not None else None
    if labels_path is not None and not labels_path.is_file():
        raise SourceError(f"labels file not found: {labels_path}")
    files = ArchiveFiles.at(path, access)
    if kind == "mura":
        if labels_path is not None:
            raise SourceError("a MURA archive takes its labels from its own CSVs, not --labels")
        return mura.list_mura(files)
    if kind == "dicom":
        return list_dicom(files, labels_path)
    if kind == "folder":
        return list_folder(files, labels_path)
    raise SourceError(f"unknown source kind {kind!r}: choose one of {', '.join(KINDS)}")


@dataclass(frozen=True)
class PartSummary:
    """Counts for one body part: studies, positive studies, unlabelled studies, images."""

    studies: int
    positive: int
    unlabelled: int
    images: int


def summarize(listing: Listing) -> dict[str, PartSummary]:
    """Per body part counts (study-level labels): MURA's seven parts first, then the other
    named parts (`leg`, `hip` …) alphabetically, then OTHER."""
    studies = listing.studies()
    by_part: dict[str, Counter[str]] = {}
    for refs in studies.values():
        counter = by_part.setdefault(str(refs[0].body_part), Counter())
        counter["studies"] += 1
        counter["images"] += len(refs)
        label = refs[0].label
        counter["positive"] += int(label == 1)
        counter["unlabelled"] += int(label is None)
    order = part_order(by_part)
    return {
        part: PartSummary(
            by_part[part]["studies"],
            by_part[part]["positive"],
            by_part[part]["unlabelled"],
            by_part[part]["images"],
        )
        for part in order
        if part in by_part
    }


def format_summary(listing: Listing) -> str:
    """The one-screen table `mura inspect` and the demo print."""
    table = summarize(listing)
    lines = [
        f"{listing.kind} archive at {listing.root}",
        f"{'body part':<12} {'studies':>8} {'positive':>9} {'unlabelled':>11} {'images':>7}",
    ]
    totals = Counter()
    for part, row in table.items():
        lines.append(
            f"{part:<12} {row.studies:>8} {row.positive:>9} {row.unlabelled:>11} {row.images:>7}"
        )
        totals.update(
            studies=row.studies, positive=row.positive, unlabelled=row.unlabelled, images=row.images
        )
    lines.append(
        f"{'total':<12} {totals['studies']:>8} {totals['positive']:>9} "
        f"{totals['unlabelled']:>11} {totals['images']:>7}"
    )
    splits = Counter(str(r.split) if r.split else "unassigned" for r in listing.refs)
    lines.append("images by split: " + ", ".join(f"{k} {v}" for k, v in sorted(splits.items())))
    skipped = "instances skipped" if listing.kind in PACS_KINDS else "junk files skipped"
    lines.append(f"problems: {len(listing.problems)}   {skipped}: {listing.junk_skipped}")
    for problem in listing.problems[:10]:
        lines.append(f"  {problem.error_type}: {problem.path}: {problem.reason}")
    if len(listing.problems) > 10:
        lines.append(f"  … and {len(listing.problems) - 10} more")
    lines.extend(f"note: {note}" for note in listing.notes)
    return "\n".join(lines)


__all__ = ["KINDS", "SourceError", "detect_kind", "format_summary", "list_source", "summarize"]
