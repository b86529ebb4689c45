"""A plain folder of PNG/JPEG images, with an optional labels CSV.

Without a CSV every image is its own study, unlabelled, body part guessed from its path
("…/wrist/img1.png" → XR_WRIST). The CSV (header row; `path` required, then any of `label`,
`study`, `patient`, `body_part`, `view`, `split`) labels images and groups them into studies.
A CSV path that leaves the archive root is a problem `outside_archive` (never looked at); an
image listed twice with two labels is a problem `conflicting_labels`, and so is a study
whose images are labelled differently: either study is left unlabelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..archive import ArchiveFiles, FileRefusedError
from ..imaging import IMAGE_SUFFIXES
from ..records import ImageRef, Listing, Problem, Split, body_part_named
from ..studies import CONFLICTING_LABELS, settle_labels
from .common import DOC_SUFFIXES, LabelsFile, SourceError, parse_label, read_header_csv

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
        path=str(path),
        relpath=rel,
        image_id=rel,
        study_key=study,
        patient_key=row.get("patient") or study,
        body_part=body_part_named(row.get("body_part"), rel),
        view=row.get("view") or None,
        label=parse_label(row.get("label")),
        split=Split(split.lower()) if split else None,
    )


def list_folder(files: ArchiveFiles, labels: Path | None = None) -> Listing:
    """Image references of every PNG/JPEG below the archive root."""
    root = Path(files.root)
    labels_file = LabelsFile.find(files, labels, LABELS_FILE)
    rows = _rows_by_path(labels_file, files)
    problems = list(rows.problems)
    refs: list[ImageRef] = []
    junk = 0
    for entry in files.walk():
        if labels_file.is_listed(entry.path):
            continue
        if entry.problem is not None:
            problems.append(entry.problem)
            continue
        if entry.junk or entry.path.name.lower().endswith(DOC_SUFFIXES):
            junk += 1
            continue
        if not entry.path.name.lower().endswith(IMAGE_SUFFIXES):
            problems.append(
                Problem(
                    entry.rel,
                    "list",
                    "not_an_image",
                    f"not a PNG/JPEG file ({entry.path.suffix or 'no suffix'})",
                )
            )
            continue
        refs.append(_ref(entry.path, entry.rel, rows.by_path.get(entry.rel, {})))
    conflicted = {r.study_key for r in refs if r.relpath in rows.conflicted}
    settled, conflicts = settle_labels(refs, unlabel=conflicted)
    notes = (
        (f"labels from {labels_file.path.name}: {len(rows.by_path)} images",)
        if labels_file.path
        else ("no labels CSV: one image = one unlabelled study",)
    )
    return Listing(
        kind=KIND,
        root=str(root),
        refs=settled,
        problems=tuple(problems + conflicts),
        junk_skipped=junk,
        notes=notes,
    )
