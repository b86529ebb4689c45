"""What goes into a dataset: one `ImageRow` per listed image, split and pseudonymized, and
the digests that say what an input's images are.

Built on the driver from a listing (ingest and raw screening alike). Pseudonyms replace
identifiers before any row reaches Ray (`pseudonyms`), so nothing downstream (shards,
logs, MLflow) ever holds the originals; the map back is returned separately for
`reidentify.csv`. An image's line (relative path, frame, file size) identifies its content:
digests of lines say whether a study's image set, or a whole input, changed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass

from mura_core.archive.pseudonyms import Pseudonyms
from mura_core.listing import Listing
from mura_core.locations import FileLocation, Location
from mura_core.privacy import ACCESSION, Pseudonymizer
from mura_core.records import ImageRow, Pseudonym, QuarantineRow
from mura_core.splits import SplitConfig, assign_splits


@dataclass(frozen=True)
class PreparedRows:
    """Rows for Ray, problems already known from listing, and the re-identification map."""

    rows: list[ImageRow]
    problems: list[QuarantineRow]
    reidentify: list[tuple[str, str, str]]  # (kind, pseudonym, original)
    pseudonymized: bool


def prepare_rows(
    listing: Listing,
    splits: SplitConfig,
    *,
    pseudonymize: str = "auto",
    pseudonymizer: Pseudonymizer | None = None,
) -> PreparedRows:
    """A listing as dataset rows (each with its location, to read) and problems, their
    identifiers pseudonymized here, on the driver (see `pseudonyms`)."""
    pseudonyms = Pseudonyms.of_input(listing.kind, pseudonymize, pseudonymizer)
    final = assign_splits(listing.refs, splits)
    rows = [
        ImageRow.from_ref(ref, split).pseudonymized(pseudonyms)
        for ref, split in zip(listing.refs, final, strict=True)
    ]
    problems = [QuarantineRow.from_problem(p).pseudonymized(pseudonyms) for p in listing.problems]
    reidentify = pseudonyms.reidentify() + accession_entries(listing, pseudonyms)
    return PreparedRows(rows, problems, reidentify, pseudonyms.enabled)


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
    PACS instances, whose UIDs identify their content). A changed file changes its line,
    its study's digest and the archive's."""
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
