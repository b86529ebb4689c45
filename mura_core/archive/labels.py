"""Shared pieces of the folder listers: labels, CSVs read through `ArchiveFiles`, whole-run
errors (`SourceError`). Walking a tree is `walk`'s, opening its files `files`'."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from mura_core.archive.files import ArchiveFiles, read_regular
from mura_core.errors import MuraError
from mura_core.imaging.errors import ImagingError


class SourceError(MuraError):
    """A whole-run problem (missing root, empty archive, unreadable CSV): fail before work."""


# Documentation and side-car files that can sit in an archive without being images.
DOC_SUFFIXES = (
    ".txt",
    ".md",
    ".csv",
    ".json",
    ".xml",
    ".html",
    ".htm",
    ".ini",
    ".log",
    ".yaml",
    ".yml",
    ".pdf",
    ".rtf",
)


def require_dir(root: str | Path) -> Path:
    """The archive root as an absolute path, or a one-line SourceError."""
    path = Path(root).expanduser()
    if not path.exists():
        raise SourceError(f"source not found: {path}")
    if not path.is_dir():
        raise SourceError(f"source is not a directory: {path}")
    return path.resolve()


_POSITIVE = {"1", "positive", "abnormal", "pos", "true", "yes"}
_NEGATIVE = {"0", "negative", "normal", "neg", "false", "no"}


def parse_label(value: str | None) -> int | None:
    """'1'/'positive'/'abnormal' → 1, '0'/'negative'/'normal' → 0, empty → None."""
    text = (value or "").strip().lower()
    if not text:
        return None
    if text in _POSITIVE:
        return 1
    if text in _NEGATIVE:
        return 0
    raise ValueError(f"unrecognised label {value!r} (use 0/1, normal/abnormal)")


CSV_MAX_BYTES = 256 * 1024 * 1024  # MURA's largest CSV is 3 MB


def open_csv(path: Path, files: ArchiveFiles | None = None) -> TextIO:
    """A CSV's text, read through the archive layer: a regular file (a FIFO never blocks the
    listing), inside the archive when `files` is given (a `labels.csv` linking out of it is
    refused), of bounded size; a refusal is a one-line SourceError."""
    try:
        if files is not None:
            data = files.read(path)
        else:
            data = read_regular(path, max_bytes=CSV_MAX_BYTES)
        return io.StringIO(data.decode("utf-8-sig"), newline="")
    except ImagingError as exc:
        raise SourceError(f"cannot read {path}: {exc.reason}") from exc
    except UnicodeDecodeError as exc:
        raise SourceError(f"cannot read {path}: not UTF-8 text ({exc.reason})") from exc


@dataclass(frozen=True, slots=True)
class LabelsFile:
    """The labels CSV of a folder or DICOM tree: the one the user named (`--labels`, read as
    given) or the archive's own `labels.csv` (read through the archive layer), or none."""

    path: Path | None
    files: ArchiveFiles | None  # the archive's: its own labels.csv; None: the user's file

    @classmethod
    def find(cls, files: ArchiveFiles, named: Path | None, name: str = "labels.csv") -> LabelsFile:
        if named is not None:
            return cls(named, None)
        own = Path(files.root) / name
        return cls(own if own.is_file() else None, files)

    def is_listed(self, path: Path) -> bool:
        """Whether a walked file is this CSV (not an input)."""
        return self.path is not None and path == self.path


def read_header_csv(
    path: Path, required: tuple[str, ...], files: ArchiveFiles | None = None
) -> list[dict[str, str]]:
    """A CSV with a header row, column names lower-cased; missing columns fail fast."""
    try:
        with open_csv(path, files) as handle:
            reader = csv.DictReader(handle)
            fields = [f.strip().lower() for f in (reader.fieldnames or [])]
            missing = [c for c in required if c not in fields]
            if missing:
                raise SourceError(
                    f"{path}: missing column(s) {', '.join(missing)} "
                    f"(found: {', '.join(fields) or 'none'})"
                )
            return [
                # cells beyond the header (DictReader's key None) are not columns: ignored
                {k.strip().lower(): (v or "").strip() for k, v in row.items() if k is not None}
                for row in reader
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SourceError(f"cannot read {path}: {exc}") from exc
