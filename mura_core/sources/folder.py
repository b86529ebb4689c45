"""A plain folder of PNG/JPEG images, with an optional labels CSV.

Without a CSV every image is its own study, unlabelled, body part guessed from its path
("…/wrist/img1.png" → XR_WRIST). The CSV (header row; `path` required, then any of `label`,
`study`, `patient`, `body_part`, `view`, `split`) labels images and groups them into studies.
"""

from __future__ import annotations

from pathlib import Path

from ..imaging import IMAGE_SUFFIXES
from ..records import ImageRef, Listing, Problem, Split, body_part_from_text
from .common import DOC_SUFFIXES, SourceError, parse_label, read_header_csv, walk_files

KIND = "folder"
LABELS_FILE = "labels.csv"


def _rows_by_path(labels_path: Path, root: Path) -> tuple[dict[str, dict[str, str]], list[Problem]]:
    rows: dict[str, dict[str, str]] = {}
    problems: list[Problem] = []
    for line_no, row in enumerate(read_header_csv(labels_path, ("path",)), start=2):
        rel = row["path"].replace("\\", "/").removeprefix("./")
        where = f"{labels_path.name} line {line_no}"
        try:
            parse_label(row.get("label"))
            if row.get("split"):
                Split(row["split"].lower())
        except ValueError as exc:
            raise SourceError(f"{labels_path} line {line_no}: {exc}") from exc
        if not (root / rel).is_file():
            problems.append(
                Problem(rel, "list", "missing_file", f"{where} names an image that is not on disk")
            )
            continue
        rows[rel] = row
    return rows, problems


def list_folder(root: Path, labels: Path | None = None) -> Listing:
    """Image references of every PNG/JPEG below `root`."""
    labels_path = (
        labels
        if labels is not None
        else (root / LABELS_FILE if (root / LABELS_FILE).is_file() else None)
    )
    rows, problems = _rows_by_path(labels_path, root) if labels_path else ({}, [])
    refs: list[ImageRef] = []
    junk = 0
    for path, is_junk in walk_files(root):
        rel = path.relative_to(root).as_posix()
        if labels_path is not None and path == labels_path:
            continue
        if is_junk or path.name.lower().endswith(DOC_SUFFIXES):
            junk += 1
            continue
        if not path.name.lower().endswith(IMAGE_SUFFIXES):
            problems.append(
                Problem(
                    rel,
                    "list",
                    "not_an_image",
                    f"not a PNG/JPEG file ({path.suffix or 'no suffix'})",
                )
            )
            continue
        row = rows.get(rel, {})
        study = row.get("study") or rel.rsplit(".", 1)[0]
        split = row.get("split")
        refs.append(
            ImageRef(
                path=str(path),
                relpath=rel,
                image_id=rel,
                study_key=study,
                patient_key=row.get("patient") or study,
                body_part=body_part_from_text(row.get("body_part"), rel),
                view=row.get("view") or None,
                label=parse_label(row.get("label")),
                split=Split(split.lower()) if split else None,
            )
        )
    notes = (
        (f"labels from {labels_path.name}: {len(rows)} images",)
        if labels_path
        else ("no labels CSV: one image = one unlabelled study",)
    )
    return Listing(
        kind=KIND,
        root=str(root),
        refs=tuple(refs),
        problems=tuple(problems),
        junk_skipped=junk,
        notes=notes,
    )
