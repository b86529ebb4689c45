"""MURA-v1.1 as published: `{train,valid}/XR_*/patientN/studyN_{positive,negative}/imageN.png`.

Labels and splits come from the four CSVs when they are present, and from the
`studyN_positive|negative` folder names otherwise. The published CSVs have no header line;
several public copies add one (`Img_Path,Label`): a first row that names no path is taken
as a header, skipped, and said so in the notes ("CSVs used: …"). A CSV row naming a file
that is not on disk becomes a problem (a quarantine row later), never a crash: copies of
MURA are often partial. A CSV path that leaves the archive (`..` beyond the root, or a link
out of it) is a problem `outside_archive`, never looked at; a study the CSVs label twice,
differently, is a problem `conflicting_labels` and left unlabelled (its folder name is not
taken instead: two sources disagree already).
"""

from __future__ import annotations

import csv
import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from mura_core.archive.base import FileArchive
from mura_core.archive.files import ArchiveFiles, Entry, FileRefusedError
from mura_core.archive.labels import SourceError, open_csv
from mura_core.archive.walk import FileLister, list_files
from mura_core.body_parts import BodyPart
from mura_core.listing import ImageRef, Listing, Problem, Split
from mura_core.locations import FileLocation
from mura_core.studies import CONFLICTING_LABELS

KIND = "mura"
ROOT_NAME = "MURA-v1.1"
SPLITS = (Split.TRAIN, Split.VALID)
_STUDY_DIR = re.compile(r"^study(\d+)(?:_(positive|negative))?$")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def find_root(root: Path) -> Path | None:
    """The folder holding train/ and valid/: `root/MURA-v1.1`, or `root` itself."""
    for candidate in (root / ROOT_NAME, root):
        for split in SPLITS:
            split_dir = candidate / str(split)
            if split_dir.is_dir() and any(
                p.is_dir() and p.name.startswith("XR_") for p in split_dir.iterdir()
            ):
                return candidate
    return None


def _rel_to_mura(csv_path: str) -> str | None:
    """'MURA-v1.1/train/XR_X/...' (any prefix) → 'train/XR_X/...'; None if not MURA-shaped."""
    parts = [p for p in csv_path.strip().replace("\\", "/").split("/") if p]
    for i in range(len(parts) - 1):
        if parts[i] in ("train", "valid") and parts[i + 1].startswith("XR_"):
            return "/".join(parts[i:])
    return None


@dataclass(frozen=True)
class _CsvFile:
    """A CSV's rows with their line numbers in the file, and its header line if it had one."""

    path: Path
    rows: tuple[tuple[int, list[str]], ...]
    header: tuple[str, ...] | None

    @property
    def shown(self) -> str:
        """How the CSV is named in the notes: with the header line it had, if any."""
        if self.header is None:
            return self.path.name
        return f"{self.path.name} (header line {','.join(self.header)!r} skipped)"


def _is_header(row: list[str]) -> bool:
    """A first row such as `Img_Path,Label` (several public copies add one): its first cell
    is a name, not a path, and its second (if any) not a label."""
    first = row[0].strip()
    label = row[1].strip() if len(row) > 1 else ""
    return "/" not in first and "\\" not in first and label not in ("0", "1")


def _read_csv(path: Path, files: ArchiveFiles) -> _CsvFile:
    try:
        with open_csv(path, files) as handle:
            reader = csv.reader(handle)
            rows = tuple(
                (reader.line_num, row) for row in reader if row and any(c.strip() for c in row)
            )
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SourceError(f"cannot read {path}: {exc}") from exc
    if rows and _is_header(rows[0][1]):
        return _CsvFile(path, rows[1:], tuple(c.strip() for c in rows[0][1]))
    return _CsvFile(path, rows, None)


class _Csvs:
    """What the four CSVs say, keyed by paths relative to the MURA root."""

    def __init__(self, base: Path, mura_root: Path, files: ArchiveFiles) -> None:
        self.study_labels: dict[str, int] = {}
        self.study_split: dict[str, Split] = {}
        self.image_split: dict[str, Split] = {}
        self.conflicted: set[str] = set()
        self.problems: list[Problem] = []
        self.present: list[str] = []
        self._files = files
        self._prefix = os.path.relpath(mura_root, files.root).replace(os.sep, "/")
        self._where: dict[str, str] = {}
        for split in SPLITS:
            labelled = _find_csv(base, mura_root, f"{split}_labeled_studies.csv")
            if labelled is not None:
                self._labelled(_read_csv(labelled, files), split)
            images = _find_csv(base, mura_root, f"{split}_image_paths.csv")
            if images is not None:
                self._images(_read_csv(images, files), split)

    def _locate(self, listed: str, rel: str, where: str) -> tuple[str, Path] | None:
        """`rel` (relative to the MURA root, from a CSV) normalized, and its path; None and
        a problem when it leads out of the archive."""
        try:
            path = self._files.locate(posixpath.join(self._prefix, rel))
        except FileRefusedError as exc:
            self.problems.append(Problem(listed, "list", exc.error_type, f"{where}: {exc.reason}"))
            return None
        return posixpath.normpath(rel), path

    def _labelled(self, csv_file: _CsvFile, split: Split) -> None:
        self.present.append(csv_file.shown)
        for line_no, row in csv_file.rows:
            rel = _rel_to_mura(row[0])
            where = f"{csv_file.path.name} line {line_no}"
            if rel is None or len(row) < 2 or row[1].strip() not in ("0", "1"):
                self.problems.append(
                    Problem(
                        row[0],
                        "list",
                        "bad_csv_row",
                        f"{where}: expected 'study path,0|1', got {row!r}",
                    )
                )
                continue
            located = self._locate(row[0], rel.rstrip("/"), where)
            if located is None:
                continue
            rel, path = located
            if not path.is_dir():
                self.problems.append(
                    Problem(
                        row[0],
                        "list",
                        "missing_file",
                        f"{where} names a study folder that is not on disk",
                    )
                )
                continue
            self._label(row[0], rel, int(row[1].strip()), where)
            self.study_split[rel] = split

    def _label(self, listed: str, rel: str, label: int, where: str) -> None:
        """A study's label from a CSV row; a second row that disagrees makes a conflict."""
        if rel in self.study_labels and self.study_labels[rel] != label:
            if rel not in self.conflicted:
                self.conflicted.add(rel)
                self.problems.append(
                    Problem(
                        listed,
                        "list",
                        CONFLICTING_LABELS,
                        f"{self._where[rel]} and {where} label this study differently: "
                        "the study is left unlabelled",
                    )
                )
            return
        self.study_labels.setdefault(rel, label)
        self._where.setdefault(rel, where)

    def _images(self, csv_file: _CsvFile, split: Split) -> None:
        self.present.append(csv_file.shown)
        for line_no, row in csv_file.rows:
            rel = _rel_to_mura(row[0])
            where = f"{csv_file.path.name} line {line_no}"
            if rel is None:
                self.problems.append(
                    Problem(
                        row[0], "list", "bad_csv_row", f"{where}: not a MURA image path: {row[0]!r}"
                    )
                )
                continue
            located = self._locate(row[0], rel, where)
            if located is None:
                continue
            rel, path = located
            if not path.is_file():
                self.problems.append(
                    Problem(
                        row[0],
                        "list",
                        "missing_file",
                        f"{where} names an image that is not on disk",
                    )
                )
            else:
                self.image_split[rel] = split


def _find_csv(base: Path, mura_root: Path, name: str) -> Path | None:
    for folder in (mura_root, base):
        if (folder / name).is_file():
            return folder / name
    return None


def _layout(entry: Entry, rel: str) -> tuple[list[str], re.Match[str]] | Problem:
    """A file's path parts (relative to the MURA root) and its study folder's match, or
    the problem of a file not at split/XR_*/patient*/study*/image*."""
    parts = rel.split("/")
    match = _STUDY_DIR.match(parts[3]) if len(parts) == 5 else None
    if match is None or not parts[1].startswith("XR_"):
        return Problem(
            entry.rel,
            "list",
            "unexpected_layout",
            "not at split/XR_*/patient*/study*/image* in MURA",
        )
    return parts, match


class MuraLister(FileLister):
    """MURA-v1.1: its split folders walked; layout, CSVs and folder names say the rest."""

    kind = KIND
    suffixes = _IMAGE_SUFFIXES

    def __init__(self, files: ArchiveFiles) -> None:
        super().__init__(files)
        root = Path(files.root)
        mura_root = find_root(root)
        if mura_root is None:
            raise SourceError(f"{root}: no MURA layout (expected {ROOT_NAME}/train/XR_*/...)")
        self.mura_root = mura_root
        self.csvs = _Csvs(root, mura_root, files)
        self.labels: list[tuple[int | None, int | None]] = []  # (label, folder label) per image

    def below(self) -> list[Path]:
        folders = (self.mura_root / str(split) for split in SPLITS)
        return [folder for folder in folders if folder.is_dir()]

    def known_problems(self) -> list[Problem]:
        return self.csvs.problems

    def is_junk(self, entry: Entry) -> bool:
        return False  # a document inside MURA's tree is a stray file: a problem

    def _rel(self, entry: Entry) -> str:
        return os.path.relpath(entry.path, self.mura_root).replace(os.sep, "/")

    def wrong_suffix(self, entry: Entry) -> Problem:
        layout = _layout(entry, self._rel(entry))
        if isinstance(layout, Problem):
            return layout
        return Problem(
            entry.rel,
            "list",
            "not_an_image",
            f"unexpected file type {entry.path.suffix or '(none)'}",
        )

    def image(self, entry: Entry) -> list[ImageRef] | Problem:
        rel = self._rel(entry)
        layout = _layout(entry, rel)
        if isinstance(layout, Problem):
            return layout
        parts, match = layout
        try:
            body_part = BodyPart(parts[1])
        except ValueError:
            return Problem(
                entry.rel, "list", "unknown_body_part", f"{parts[1]} is not a MURA study type"
            )
        csvs, study_rel = self.csvs, "/".join(parts[:4])
        folder_label = {"positive": 1, "negative": 0}.get(match.group(2) or "")
        label = (
            None if study_rel in csvs.conflicted else csvs.study_labels.get(study_rel, folder_label)
        )
        self.labels.append((label, folder_label))
        split = Split(parts[0])
        ref = ImageRef(
            location=FileLocation(str(entry.path)),
            relpath=entry.rel,
            image_id=rel,
            study_key=f"{parts[0]}/{parts[1]}/{parts[2]}/study{match.group(1)}",
            patient_key=parts[2],
            body_part=body_part,
            view=None,
            label=label,
            split=csvs.image_split.get(rel, csvs.study_split.get(study_rel, split)),
        )
        return [ref]

    def notes(self) -> tuple[str, ...]:
        present = self.csvs.present
        notes = [
            f"CSVs used: {', '.join(present)}"
            if present
            else "no MURA CSVs found: labels and splits from folder names"
        ]
        disagreements = sum(
            1 for label, folder in self.labels if None not in (label, folder) and label != folder
        )
        if disagreements:
            notes.append(f"{disagreements} image(s): CSV label differs from folder name; CSV used")
        return tuple(notes)


def list_mura(files: ArchiveFiles) -> Listing:
    """Image references of a MURA-v1.1 archive; see the module docstring for the rules."""
    return list_files(MuraLister(files))


@dataclass(frozen=True)
class MuraArchive(FileArchive):
    """MURA-v1.1 (labels and splits from its own CSVs and folder names)."""

    kind: ClassVar[str] = KIND

    def __post_init__(self) -> None:
        if self.labels is not None:
            raise SourceError("a MURA archive takes its labels from its own CSVs, not --labels")

    def lister(self) -> MuraLister:
        return MuraLister(self.files)
