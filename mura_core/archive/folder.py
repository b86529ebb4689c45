"""A plain folder of PNG/JPEG images, with an optional labels CSV.

Without a CSV every image is its own study, unlabelled, body part guessed from its path
("…/wrist/img1.png" → XR_WRIST). The CSV (header row; `path` required, then any of `label`,
`study`, `patient`, `body_part`, `view`, `split`) labels images and groups them into studies.
A CSV path that leaves the archive root is a problem `outside_archive` (never looked at); an
image listed twice with two labels is a problem `conflicting_labels`, and so is a study
whose images are labelled differently: either study is left unlabelled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from mura_core.archive.base import FileArchive
from mura_core.archive.files import ArchiveFiles, Entry, FileRefusedError
from mura_core.archive.labels import LabelsFile, SourceError, parse_label, read_header_csv
from mura_core.archive.walk import FileLister, list_files
from mura_core.body_parts import body_part_named
from mura_core.imaging import IMAGE_SUFFIXES
from mura_core.listing import ImageRef, Listing, Problem, Split
from mura_core.locations import FileLocation
from mura_core.studies import CONFLICTING_LABELS, settle_labels

KIND = "folder"
LABELS_FILE = "labels.csv"


@dataclass
class _Rows:
    """The labels CSV: its rows by relative path, the problems, and the paths whose rows
    disagree on the label."""

    by_path: dict[str, dict[str, str]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    conflicted: set[str] = field(default_factory=set)
    lines: dict[str, int] = field(default_factory=dict)


def _check_row(row: dict[str, str], where: str) -> None:
    try:
        parse_label(row.get("label"))
        if row.get("split"):
            Split(row["split"].lower())
    except ValueError as exc:
        raise SourceError(f"{where}: {exc}") from exc


def _rows_by_path(labels: LabelsFile, archive: ArchiveFiles) -> _Rows:
    out = _Rows()
    if labels.path is None:
        return out
    labels_path = labels.path
    rows = read_header_csv(labels_path, ("path",), labels.files)
    for line_no, row in enumerate(rows, start=2):
        rel = row["path"].replace("\\", "/").removeprefix("./")
        where = f"{labels_path.name} line {line_no}"
        _check_row(row, f"{labels_path} line {line_no}")
        try:
            path = archive.locate(rel)
        except FileRefusedError as exc:
            out.problems.append(Problem(rel, "list", exc.error_type, f"{where}: {exc.reason}"))
            continue
        if not path.is_file():
            out.problems.append(
                Problem(rel, "list", "missing_file", f"{where} names an image that is not on disk")
            )
            continue
        earlier = out.by_path.get(rel)
        if earlier is not None and parse_label(earlier.get("label")) != parse_label(
            row.get("label")
        ):
            if rel not in out.conflicted:
                out.conflicted.add(rel)
                out.problems.append(
                    Problem(
                        rel,
                        "list",
                        CONFLICTING_LABELS,
                        f"{labels_path.name} lines {out.lines[rel]} and {line_no} label this "
                        "image differently: its study is left unlabelled",
                    )
                )
            continue
        out.by_path[rel] = row
        out.lines.setdefault(rel, line_no)
    return out


def _ref(path: Path, rel: str, row: dict[str, str]) -> ImageRef:
    study = row.get("study") or rel.rsplit(".", 1)[0]
    split = row.get("split")
    return ImageRef(
        location=FileLocation(str(path)),
        relpath=rel,
        image_id=rel,
        study_key=study,
        patient_key=row.get("patient") or study,
        body_part=body_part_named(row.get("body_part"), rel),
        view=row.get("view") or None,
        label=parse_label(row.get("label")),
        split=Split(split.lower()) if split else None,
    )


class FolderLister(FileLister):
    """A plain image folder: PNG/JPEG files, labelled and grouped by its labels CSV."""

    kind = KIND
    suffixes = IMAGE_SUFFIXES

    def __init__(self, files: ArchiveFiles, labels: Path | None = None) -> None:
        super().__init__(files)
        self.labels_file = LabelsFile.find(files, labels, LABELS_FILE)
        self.rows = _rows_by_path(self.labels_file, files)

    def known_problems(self) -> list[Problem]:
        return self.rows.problems

    def is_own(self, entry: Entry) -> bool:
        return self.labels_file.is_listed(entry.path)

    def image(self, entry: Entry) -> list[ImageRef]:
        return [_ref(entry.path, entry.rel, self.rows.by_path.get(entry.rel, {}))]

    def settle(self, refs: Sequence[ImageRef]) -> tuple[tuple[ImageRef, ...], list[Problem]]:
        conflicted = {r.study_key for r in refs if r.relpath in self.rows.conflicted}
        return settle_labels(refs, unlabel=conflicted)

    def notes(self) -> tuple[str, ...]:
        if self.labels_file.path is None:
            return ("no labels CSV: one image = one unlabelled study",)
        return (f"labels from {self.labels_file.path.name}: {len(self.rows.by_path)} images",)


def list_folder(files: ArchiveFiles, labels: Path | None = None) -> Listing:
    """Image references of every PNG/JPEG below the archive root."""
    return list_files(FolderLister(files, labels))


@dataclass(frozen=True)
class FolderArchive(FileArchive):
    """A plain folder of PNG/JPEG images (labels from `labels.csv` or the file given)."""

    kind: ClassVar[str] = KIND

    def lister(self) -> FolderLister:
        return FolderLister(self.files, self.labels)
