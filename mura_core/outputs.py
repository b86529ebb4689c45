"""Folders the project writes: whose they are, who writes them now, and writes that fail cleanly.

- **Ownership.** Every folder a command creates in a place of the user's choosing carries a
  marker file (`.mura-report`, `.mura-shards`, `.mura-state`), written when the folder is
  created (`claimed`): a killed run never leaves an unmarked folder with anything in it. A
  command deletes or replaces only what carries its marker, and refuses a folder that holds
  anything else (`is_empty` counts a folder holding nothing but our lock file as empty).
- **Locks.** One run at a time per folder: `locked` takes an exclusive, non-blocking
  `fcntl.flock` on `FOLDER/.lock` for the whole run; a second run fails at once with one line
  naming the folder and changes nothing. The lock goes with the process (a killed run holds
  none); the lock file stays (deleting it would race a run that just opened it).
- **Writes.** `writing(path)` turns an OSError while writing `path` (a full disk, a quota, a
  file-size limit) into one line, `cannot write PATH: No space left on device`; `atomic(path)`
  writes a temporary sibling and renames it over `path`, removing the temporary whatever
  happens; `remove_temporaries` sweeps the temporary names of a folder we hold. Only OSError
  from writes is turned into a line: a bug keeps its traceback.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

from mura_core.errors import MuraError

LOCK_FILE = ".lock"
TEMPORARY = re.compile(r"^\..+\.tmp(-.*)?$")  # `.NAME.tmp`, `.NAME.tmp-<pid>-<id>`: ours


class OutputError(MuraError):
    """An output that cannot be written (disk full, quota, …), named in one line."""


def reason(exc: OSError) -> str:
    """What went wrong, in the words of the C library (`No space left on device`)."""
    if exc.errno:
        return os.strerror(exc.errno)
    return " ".join(str(exc.strerror or exc).split()) or type(exc).__name__


@contextlib.contextmanager
def writing(path: Path, error: type[MuraError] = OutputError) -> Iterator[None]:
    """An OSError in the block is one line naming `path`: `cannot write PATH: REASON`."""
    try:
        yield
    except OSError as exc:
        raise error(f"cannot write {path}: {reason(exc)}") from exc


@contextlib.contextmanager
def atomic(path: Path, error: type[MuraError] = OutputError) -> Iterator[Path]:
    """A temporary name beside `path` to write; renamed over `path` when the block ends
    (a reader never sees half a file), removed when it fails; OSError as in `writing`."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with writing(path, error):
            yield tmp
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str, error: type[MuraError] = OutputError) -> Path:
    with atomic(path, error) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def remove_temporaries(folder: Path) -> None:
    """Remove our temporary files (`.NAME.tmp…`) below `folder`, a folder this run holds."""
    with contextlib.suppress(OSError):
        for path in folder.rglob(".*.tmp*"):
            if TEMPORARY.match(path.name) and path.is_file() and not path.is_symlink():
                with contextlib.suppress(OSError):
                    path.unlink()


def is_empty(folder: Path) -> bool:
    """Nothing in `folder` but our lock file (what a run killed as it began leaves)."""
    return all(entry.name == LOCK_FILE for entry in folder.iterdir())


def check_writable(folder: Path, error: type[MuraError] = OutputError) -> None:
    """Without writing anything: `folder`, or the nearest folder above it that exists, is a
    folder this process may write into (the first write proves it)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise error(f"cannot write to {folder}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise error(f"cannot write to {folder}: {os.strerror(13)} ({existing})")


@contextlib.contextmanager
def locked(folder: Path, what: str, error: type[MuraError] = OutputError) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (FOLDER/.lock) for the block; another holder: one
    line naming the folder (`what` names the kind of run, e.g. `mura screen run`)."""
    path = folder / LOCK_FILE
    try:
        handle = path.open("a+")  # not inherited by child processes (Python's default)
    except OSError as exc:
        raise error(f"cannot write to {folder}: {reason(exc)}") from exc
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        handle.close()
        raise error(
            f"another {what} is using {folder} (lock {path}): wait for it to end, or choose "
            "another folder"
        ) from exc
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def is_locked(folder: Path) -> bool:
    """Whether a run holds `folder`'s lock now (a non-blocking try, released at once)."""
    path = folder / LOCK_FILE
    if not path.is_file():
        return False
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


@contextlib.contextmanager
def claimed(
    folder: Path, marker: str, text: str, what: str, error: type[MuraError] = OutputError
) -> Iterator[Path]:
    """Create `folder` (and the folders above it), lock it, and write its marker: a folder
    of ours, held by this run for the block. Call it once every check has passed. On a
    failure inside the block our temporary files in it are removed."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(f"cannot write to {folder}: {reason(exc)}") from exc
    with locked(folder, what, error):
        mark = folder / marker
        if not mark.is_file() or mark.read_text(encoding="utf-8") != text:
            write_marker(mark, text, error)
        try:
            yield folder
        except BaseException:
            remove_temporaries(folder)
            raise


def write_marker(path: Path, text: str, error: type[MuraError] = OutputError) -> None:
    """In place, not by rename: from its first byte the folder is ours (a temporary
    sibling would leave, killed, a folder with a file in it and no marker)."""
    with writing(path, error):
        path.write_text(text, encoding="utf-8")


def mark_folder(folder: Path, marker: str, text: str, error: type[MuraError] = OutputError) -> Path:
    """Create `folder` with its marker at once (a folder inside one this run holds)."""
    with writing(folder, error):
        folder.mkdir(parents=True, exist_ok=True)
    write_marker(folder / marker, text, error)
    return folder
