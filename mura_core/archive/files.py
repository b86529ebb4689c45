"""Walk, locate and read an archive's files safely (see the package docstring for the rules).

`open_regular` / `read_regular` are the low-level safe open: non-blocking (a FIFO never
blocks it), regular files only (checked on the open descriptor, so nothing is swapped in
between the check and the read), and never more than `max_bytes` read. `ArchiveFiles` adds
the archive root: containment of links and CSV paths, and the walk every lister uses.
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mura_core.errors import ConfigError
from mura_core.imaging.errors import CorruptFileError, ImagingError
from mura_core.listing import Problem

DEFAULT_MAX_BYTES = 256 * 1024 * 1024  # twice an uncompressed 64 Mpx 16-bit DICOM
MAX_BYTES_FLAG = "--max-file-size"

# Files that are never inputs: macOS resource forks and folder metadata, Windows thumbnails.
_JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini", ".directory", "DICOMDIR"}
JUNK_DIRS = {"__MACOSX", ".git", ".svn", ".Trashes", ".Spotlight-V100", ".fseventsd"}
_DRIVE = re.compile(r"^[A-Za-z]:/")


class FileRefusedError(ImagingError):
    """A file the archive layer will not read (its kind, its place, or its size)."""

    error_type = "file_refused"


class NotARegularFileError(FileRefusedError):
    """A FIFO, socket, device, folder or broken link: never opened for reading."""

    error_type = "not_a_regular_file"


class OutsideArchiveError(FileRefusedError):
    """A link or a listed path that leads outside the archive root."""

    error_type = "outside_archive"


class BadPathError(FileRefusedError):
    """A listed path no file system can hold (a NUL byte)."""

    error_type = "bad_path"


class FileTooLargeError(FileRefusedError):
    """More bytes than the read cap."""

    error_type = "too_large"


def is_junk(name: str) -> bool:
    """macOS `._*` / `.DS_Store` and friends: skipped and counted, never quarantined."""
    return name.startswith("._") or name in _JUNK_NAMES


def _kind_of(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def _too_large(size: int, max_bytes: int) -> FileTooLargeError:
    return FileTooLargeError(
        f"{size:,} bytes exceeds the read cap of {max_bytes:,} bytes (raise it with "
        f"{MAX_BYTES_FLAG})"
    )


def open_regular(path: str | os.PathLike[str], *, max_bytes: int) -> BinaryIO:
    """Open a regular file for reading, or raise: not regular, over `max_bytes`, unreadable.

    O_NONBLOCK: opening a FIFO without a writer returns at once (then refused by fstat)
    instead of blocking forever; it changes nothing for a regular file.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a UNIX socket
            raise NotARegularFileError("a socket: never opened") from exc
        raise CorruptFileError(f"cannot read file: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFileError(f"{_kind_of(info.st_mode)}: never read")
        if info.st_size > max_bytes:
            raise _too_large(info.st_size, max_bytes)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike[str], *, max_bytes: int) -> bytes:
    """The whole content of a regular file of at most `max_bytes` (see `open_regular`)."""
    with open_regular(path, max_bytes=max_bytes) as handle:
        try:
            # ask for what the file holds (+1 to see it grow), not the cap: read(n)
            # allocates n bytes before it reads
            size = os.fstat(handle.fileno()).st_size
            data = handle.read(min(size, max_bytes) + 1)
            if len(data) > size:  # it grew while being read: read on, to the cap
                data += handle.read(max_bytes + 1 - len(data))
        except OSError as exc:
            raise CorruptFileError(f"cannot read file: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:  # it grew while being read
        raise _too_large(len(data), max_bytes)
    return data


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """How far an archive may be followed and read: links out of it, bytes per file."""

    follow_links: bool = False
    max_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self) -> None:
        if self.max_bytes < 1:
            raise ConfigError(f"{MAX_BYTES_FLAG} must be at least 1 byte, got {self.max_bytes}")


@dataclass(frozen=True, slots=True)
class Entry:
    """One walked file: usable (`problem` None, not junk), junk, or refused with a problem."""

    path: Path  # absolute, as found (a link keeps its own name)
    rel: str  # relative to the archive root, '/'-separated
    junk: bool = False
    problem: Problem | None = None

    @property
    def usable(self) -> bool:
        return not self.junk and self.problem is None


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


@dataclass(frozen=True, slots=True)
class ArchiveFiles:
    """An archive root (absolute, resolved) and its access policy: picklable, so that Ray
    tasks read the files they decode through it too."""

    root: str
    policy: AccessPolicy = AccessPolicy()

    @classmethod
    def at(cls, root: str | os.PathLike[str], policy: AccessPolicy | None = None) -> ArchiveFiles:
        return cls(os.path.realpath(root), policy or AccessPolicy())

    def _refuse_outside(self) -> OutsideArchiveError:
        return OutsideArchiveError(
            "a link whose target is outside the archive root: not followed (--follow-links "
            "allows it)"
        )

    def check(self, path: str | os.PathLike[str]) -> None:
        """Raise OutsideArchiveError when `path` (below the root) resolves outside it."""
        if not self.policy.follow_links and not _within(os.path.realpath(path), self.root):
            raise self._refuse_outside()

    def locate(self, listed: str) -> Path:
        """A path as a CSV names it (relative to the root) → the file's path, or
        OutsideArchiveError when it leaves the root: absolute, `..` beyond the root (never
        looked at), or through a link out of it; BadPathError for a NUL byte."""
        text = listed.strip().replace("\\", "/")
        if "\0" in text:
            raise BadPathError("the path holds a NUL byte")
        if text.startswith("/") or _DRIVE.match(text):
            raise OutsideArchiveError("an absolute path: archive paths are relative to its root")
        norm = posixpath.normpath(text)
        if norm == ".." or norm.startswith("../"):
            raise OutsideArchiveError("the path leaves the archive root ('..')")
        path = Path(self.root) / norm
        self.check(path)
        return path

    def open(self, path: str | os.PathLike[str]) -> BinaryIO:
        """A file below the root, opened through every rule (see the package docstring)."""
        self.check(path)
        return open_regular(path, max_bytes=self.policy.max_bytes)

    def read(self, path: str | os.PathLike[str]) -> bytes:
        """A file below the root, read whole through every rule."""
        self.check(path)
        return read_regular(path, max_bytes=self.policy.max_bytes)

    def head(self, path: str | os.PathLike[str], n: int) -> bytes:
        """The first `n` bytes of a file (b'' when it cannot be read)."""
        try:
            with self.open(path) as handle:
                return handle.read(n)
        except (ImagingError, OSError):
            return b""

    def walk(self, below: str | os.PathLike[str] | None = None) -> Iterator[Entry]:
        """Every file below `below` (default: the root), in a stable order (a folder's files
        by name, then its subfolders by name), each usable, junk or refused. Files inside
        junk folders (`__MACOSX`, `.git`...) are junk: a zip extracted on a Mac does not
        double the archive with resource-fork copies. Folder links are walked only with
        `follow_links`, to a target outside the root not walked before."""
        start = Path(below) if below is not None else Path(self.root)
        yield from self._walk_dir(start, junk_dir=False, seen={os.path.realpath(start)})

    def _walk_dir(self, folder: Path, *, junk_dir: bool, seen: set[str]) -> Iterator[Entry]:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            rel = self._rel(folder)
            yield Entry(folder, rel, problem=_problem(rel, "unreadable_folder", exc))
            return
        folders: list[tuple[Path, bool]] = []
        for entry in entries:
            path, rel = Path(entry.path), self._rel(Path(entry.path))
            junk = junk_dir or is_junk(entry.name)
            if entry.is_dir(follow_symlinks=False):
                folders.append((path, junk or entry.name in JUNK_DIRS))
                continue
            if junk:
                yield Entry(path, rel, junk=True)
                continue
            if entry.is_symlink():
                followed = self._follow(path, rel, seen)
                if isinstance(followed, Entry):
                    yield followed
                elif followed:
                    folders.append((path, False))
                continue
            yield self._regular(entry, path, rel)
        for sub, junk in folders:
            yield from self._walk_dir(sub, junk_dir=junk, seen=seen)

    def _follow(self, path: Path, rel: str, seen: set[str]) -> Entry | bool:
        """A link: its entry (a file, or refused), or True to walk it as a folder."""
        target = os.path.realpath(path)
        inside = _within(target, self.root)
        if not inside and not self.policy.follow_links:
            return Entry(path, rel, problem=_refused(rel, self._refuse_outside()))
        try:
            info = os.stat(target)
        except OSError:
            return Entry(path, rel, problem=_refused(rel, NotARegularFileError("a broken link")))
        if stat.S_ISDIR(info.st_mode):
            if inside or target in seen:
                reason = "a link to a folder already walked or inside the archive: not walked twice"
                return Entry(path, rel, problem=_refused(rel, NotARegularFileError(reason)))
            seen.add(target)
            return True
        return self._checked(path, rel, info)

    def _regular(self, entry: os.DirEntry[str], path: Path, rel: str) -> Entry:
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError as exc:
            return Entry(path, rel, problem=_problem(rel, "corrupt", exc))
        return self._checked(path, rel, info)

    def _checked(self, path: Path, rel: str, info: os.stat_result) -> Entry:
        if not stat.S_ISREG(info.st_mode):
            error = NotARegularFileError(f"{_kind_of(info.st_mode)}: never opened")
            return Entry(path, rel, problem=_refused(rel, error))
        if info.st_size > self.policy.max_bytes:
            return Entry(
                path, rel, problem=_refused(rel, _too_large(info.st_size, self.policy.max_bytes))
            )
        return Entry(path, rel)

    def _rel(self, path: Path) -> str:
        return os.path.relpath(path, self.root).replace(os.sep, "/")


def _refused(rel: str, error: ImagingError) -> Problem:
    return Problem(rel, "list", error.error_type, error.reason)


def _problem(rel: str, error_type: str, exc: OSError) -> Problem:
    return Problem(rel, "list", error_type, f"cannot read: {exc.strerror or exc}")
