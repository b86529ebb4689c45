"""An outbox: what a destination did not take yet, on disk until the next run delivers it.

The write-back's DICOM objects (`writeback.Outbox`) and the worklist's notices
(`notify.NoticeOutbox`) wait the same way; this is the machinery they share. The recipe,
top to bottom:

1. **check, writing nothing** (`check`, before any work): the folder is new, ours (its
   marker file, e.g. `.mura-outbox`, is there), or holds only items of ours (an outbox of a
   version before markers); anything else (`--outbox` naming a folder of the user's) is
   refused with one line naming what is there, and nothing in it is touched.
2. **put** (`put_item`) an item under a key (a study's pseudonym, a notice's control
   ID): one owner-only folder (0700) per key, named by a hash of it, holding the item's
   files (each written to a temporary, mode 0600, then renamed) and, last, its meta file:
   an item is complete once its meta file is there; a run killed part-way leaves an item
   the next `put_item` of the same key finishes, and that `items` does not list. The
   outbox folder is marked when first written, and is owner-only too (it holds patient
   data: DICOM headers, accession numbers).
3. **deliver** (`deliver_items`): each complete item, by folder name, handed to a sender;
   an item the sender says was taken is removed (its folder, at once), one it did not take
   stays for the next run.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Self, TypeVar

from mura_core.errors import ConfigError
from mura_core.outputs import mark_folder

T = TypeVar("T")
_ITEM_DIR = re.compile(r"[0-9a-f]{24}")


@dataclass(frozen=True)
class OutboxItem:
    """One complete item: its folder, its files and its meta file."""

    folder: Path
    meta_name: str

    @property
    def meta(self) -> str:
        """The meta file's text (JSON the owner of the outbox wrote)."""
        return (self.folder / self.meta_name).read_text(encoding="utf-8")

    def files(self, pattern: str = "*") -> list[Path]:
        """The item's files matching `pattern`, by name, less the meta file."""
        return sorted(p for p in self.folder.glob(pattern) if p.name != self.meta_name)


def _write_private(path: Path, data: bytes) -> None:
    """`path` written whole or not at all (a temporary renamed over it), mode 0600."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(data)
    tmp.replace(path)


class MarkedOutbox:
    """An owner-only folder of items waiting for a destination (see the module docstring).

    A subclass names its marker file and text, the meta file that completes an item, and
    any other names of its own the folder may hold (`OWN_NAMES`).
    """

    MARKER: ClassVar[str] = ".mura-outbox"
    MARKER_TEXT: ClassVar[str] = "mura outbox\n"
    META: ClassVar[str] = "item.json"
    OWN_NAMES: ClassVar[frozenset[str]] = frozenset()
    FLAG: ClassVar[str] = "--outbox"  # the option that names the folder, for the error line

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def check(self) -> Self:
        """Without writing: the folder is new, ours (marked), or holds only items of ours;
        else one line naming what is there."""
        if not self.folder.exists() or (self.folder / self.MARKER).is_file():
            return self
        if not self.folder.is_dir():
            raise ConfigError(f"outbox {self.folder} exists and is not a folder")
        foreign = sorted(
            p.name
            for p in self.folder.iterdir()
            if p.name not in self.OWN_NAMES
            and not (_ITEM_DIR.fullmatch(p.name) and (p / self.META).is_file())
        )
        if foreign:
            raise ConfigError(
                f"outbox {self.folder} holds what mura did not put there: "
                f"{', '.join(foreign[:5])} (nothing was changed): choose another {self.FLAG}"
            )
        return self

    def ensure(self) -> None:
        """The folder, created with its marker on first use, owner-only."""
        if not (self.folder / self.MARKER).is_file():
            mark_folder(self.folder, self.MARKER, self.MARKER_TEXT)
        self.folder.chmod(0o700)

    def item_folder(self, key: str) -> Path:
        return self.folder / hashlib.sha256(key.encode()).hexdigest()[:24]

    def put_item(self, key: str, files: Iterable[tuple[str, bytes]], meta: str) -> OutboxItem:
        """The item `key`: its files (name, bytes), then its meta file, each atomically."""
        self.ensure()
        folder = self.item_folder(key)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.chmod(0o700)
        for name, data in files:
            _write_private(folder / name, data)
        _write_private(folder / self.META, meta.encode("utf-8"))
        return OutboxItem(folder, self.META)

    def items(self) -> list[OutboxItem]:
        """The complete items, by folder name."""
        return [OutboxItem(p.parent, self.META) for p in sorted(self.folder.glob(f"*/{self.META}"))]

    def has(self, key: str) -> bool:
        return (self.item_folder(key) / self.META).is_file()

    def remove(self, item: OutboxItem) -> None:
        shutil.rmtree(item.folder)

    def deliver_items(self, send: Callable[[OutboxItem], T | None]) -> list[T]:
        """Each item handed to `send`; one it returns a value for was taken and is removed,
        one it returns None for stays. The values, in order."""
        taken = []
        for item in self.items():
            value = send(item)
            if value is not None:
                self.remove(item)
                taken.append(value)
        return taken
