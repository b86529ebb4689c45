"""Shared pieces of the sources: walking a tree, junk files, labels, whole-run errors."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import MuraError


class SourceError(MuraError):
    """A whole-run problem (missing root, empty archive, unreadable CSV): fail before work."""


# Files that are never inputs: macOS resource forks and folder metadata, Windows thumbnails.
_JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini", ".directory", "DICOMDIR"}
_JUNK_DIRS = {"__MACOSX", ".git", ".svn", ".Trashes", ".Spotlight-V100", ".fseventsd"}
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


def is_junk(name: str) -> bool:
    """macOS `._*` / `.DS_Store` and friends: skipped and counted, never quarantined."""
    return name.startswith("._") or name in _JUNK_NAMES


def walk_files(root: Path) -> Iterator[tuple[Path, bool]]:
    """Every file below `root` in a stable (sorted) order, with a flag: is it junk?

    Files inside junk folders (`__MACOSX`, `.git`...) count as junk too, so that a zip
    extracted on a Mac does not double the archive with resource-fork copies.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        junk_dir = any(part in _JUNK_DIRS for part in Path(dirpath).relative_to(root).parts)
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name, junk_dir or is_junk(name)


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


def read_header_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """A CSV with a header row, column names lower-cased; missing columns fail fast."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields = [f.strip().lower() for f in (reader.fieldnames or [])]
            missing = [c for c in required if c not in fields]
            if missing:
                raise SourceError(
                    f"{path}: missing column(s) {', '.join(missing)} "
                    f"(found: {', '.join(fields) or 'none'})"
                )
            return [
                {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
                for row in reader
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SourceError(f"cannot read {path}: {exc}") from exc
