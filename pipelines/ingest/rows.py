"""What goes into the dataset: one `ImageRow` per image reference, split and pseudonymized.

Built on the driver from a source listing. Pseudonyms replace identifiers before any row
reaches Ray, so nothing downstream (shards, logs, MLflow) ever holds the originals; the map
back is returned separately for `reidentify.csv`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mura_core.errors import ConfigError
from mura_core.locations import FileLocation, Location
from mura_core.privacy import ACCESSION, Pseudonymizer
from mura_core.records import ImageRef, ImageRow, Listing, Pseudonym, QuarantineRow
from mura_core.splits import SplitConfig, assign_splits

PSEUDONYMIZE_CHOICES = ("auto", "always", "never")


@dataclass(frozen=True)
class PreparedRows:
    """Rows for Ray, problems already known from listing, and the re-identification map."""

    rows: list[ImageRow]
    problems: list[QuarantineRow]
    reidentify: list[tuple[str, str, str]]  # (kind, pseudonym, original)
    pseudonymized: bool


def _should_pseudonymize(kind: str, mode: str) -> bool:
    if mode not in PSEUDONYMIZE_CHOICES:
        raise ConfigError(f"pseudonymize must be one of {', '.join(PSEUDONYMIZE_CHOICES)}")
    return mode == "always" or (mode == "auto" and kind in ("dicom", "dicomweb", "dimse"))


class _Mapper:
    """Pseudonymizes and remembers each (kind, original) once for the re-identification map."""

    def __init__(self, pseudo: Pseudonymizer | None) -> None:
        self.pseudo = pseudo
        self.seen: dict[tuple[str, str], str] = {}

    def __call__(self, value: str, kind: str) -> str:
        if self.pseudo is None:
            return value
        key = (kind, value)
        if key not in self.seen:
            self.seen[key] = self.pseudo(value, kind)
        return self.seen[key]


def prepare_rows(
    listing: Listing,
    splits: SplitConfig,
    *,
    pseudonymize: str = "auto",
    pseudonymizer: Pseudonymizer | None = None,
) -> PreparedRows:
    """Turn a listing into dataset rows (with the real `path` for reading) and problems."""
    enabled = _should_pseudonymize(listing.kind, pseudonymize)
    mapper = _Mapper((pseudonymizer or Pseudonymizer.from_site()) if enabled else None)
    refs: Sequence[ImageRef] = listing.refs
    final = assign_splits(refs, splits)
    rows = [
        ImageRow.from_ref(ref, split).pseudonymized(mapper)
        for ref, split in zip(refs, final, strict=True)
    ]
    problems = [QuarantineRow.from_problem(p).pseudonymized(mapper) for p in listing.problems]
    reidentify = [
        (kind, pseudonym, original) for (kind, original), pseudonym in sorted(mapper.seen.items())
    ]
    reidentify += accession_entries(listing, mapper)
    return PreparedRows(rows, problems, reidentify, enabled)


def accession_entries(listing: Listing, study_key: Pseudonym) -> list[tuple[str, str, str]]:
    """("accession", the study's key as rows carry it, its AccessionNumber) per listed study
    whose headers give one: how `mura feedback` matches reads by accession number."""
    listed = {ref.study_key for ref in listing.refs}
    return [
        (ACCESSION, study_key(study, "study"), accession)
        for study, accession in sorted(listing.accessions.items())
        if study in listed
    ]


def image_lines(rows: Iterable[ImageRow]) -> dict[str, str]:
    """Per image id, what identifies its content: relative path, frame and file size (-1 for
    PACS instances, whose UIDs in the location identify their content). A changed file
    changes its line, its study's digest and the archive's."""
    sizes: dict[Location, int] = {}
    lines: dict[str, str] = {}
    for row in rows:
        if row.location not in sizes:
            sizes[row.location] = _size(row.location)
        lines[row.image_id] = f"{row.relpath}\t{row.frame}\t{sizes[row.location]}"
    return lines


def _size(location: Location) -> int:
    if not isinstance(location, FileLocation):
        return -1
    try:
        return os.stat(location.path).st_size
    except OSError:
        return -1


def digest_lines(lines: Iterable[str]) -> str:
    """An order-free digest of some image lines (16 hex digits)."""
    h = hashlib.sha256()
    for line in sorted(lines):
        h.update(line.encode() + b"\n")
    return h.hexdigest()[:16]


def digest_studies(rows: Iterable[ImageRow], lines: dict[str, str]) -> dict[str, str]:
    """Per study, a digest of its image set."""
    by_study: dict[str, list[str]] = {}
    for row in rows:
        by_study.setdefault(row.study_key, []).append(lines[row.image_id])
    return {key: digest_lines(v) for key, v in by_study.items()}


def image_contents(lines: dict[str, str]) -> dict[str, str]:
    """Per image id, a digest of its line: what a kept score or staged row was made from."""
    return {image_id: digest_lines([line]) for image_id, line in lines.items()}
