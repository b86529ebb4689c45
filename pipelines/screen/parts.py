"""Scores that survive a killed run: image scores written in parts, keyed by image id.

While a screening scores, the driver writes every row that comes back (scored, or quarantined
with its reason) to `OUT/.scores/part-<run>-<n>.parquet`, every `every` rows or every
`seconds`, whichever comes first: written to a temporary name and renamed, so a part is whole
or absent (a write that fails, a full disk, is one line naming the part and leaves no
temporary file: `mura_core.outputs`). Each row carries `content`, a digest of what it was
made from (its file's relative path, frame and size; for shards, their manifest).
`.scores/key.json` names what every score depends on: the model bundle's digest, the
pseudonymization, the kind and root of the input, and the size of the kept pixels.

A PACS screening fetches each instance once: its rows also bring back `kept`, each frame
at the pictures' size (`pipelines.archives.decode`), which go to
`OUT/.scores/pixels-<run>-<n>.parquet` (image id, content digest, pixels), every
PIXEL_ROWS rows and always before the score part that holds their scores. The evidence
pass after scoring (`pictures`) reads the flagged studies' images from there (`kept`).

A run killed part-way leaves its parts. The re-run with the same OUT (and `mura nightly`,
which carries the parts of an interrupted report into the next) reads them, keeps each row
whose image is still in the input with the same content (and, keeping pixels, whose pixels
are kept), and scores only the rest; another model or input starts over, saying so. The
report is built from all rows, sorted by image, so it equals an uninterrupted run's. Once
the report is complete the parts (pixels too) go.

Ray Data's own checkpointing (`DataContext.checkpoint_config`, Ray 2.60) was considered: it
applies only to a plan that starts from a file `Read` and ends in a `Write`
(`Planner._check_supports_checkpointing`), while screening starts from the driver's listing
(`from_items`) and streams scores back to the driver (`iter_batches`), and its checkpoint
folder must be storage every node shares.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from mura_core.outputs import atomic, write_text_atomic, writing
from mura_core.shards import KEPT_PIXELS
from pipelines.screen.scoring import IMAGE_SCHEMA

FOLDER = ".scores"
KEY_FILE = "key.json"
PART_SCHEMA = IMAGE_SCHEMA.append(pa.field("content", pa.string()))
PIXEL_ROWS = 256  # kept pixels buffered on the driver before their part is written (~25 MB)


@dataclass(frozen=True)
class ScoreKey:
    """What every image score of a run depends on, beyond the image itself."""

    model: str  # digest of the model bundle's files
    pseudonymize: str
    kind: str
    root: str
    pixels: int = 0  # size of the pixels kept for the pictures (a PACS source); 0: none


def bundle_digest(files: dict[str, bytes]) -> str:
    """A digest of a model bundle (its files by relative path)."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Earlier:
    """Rows an interrupted run left that still hold, and what was dropped and why."""

    rows: pa.Table
    dropped: int = 0  # rows of images no longer in the input, or changed since
    note: str | None = None  # why nothing was kept (another model, another input)

    @property
    def ids(self) -> set[str]:
        return set(self.rows["image_id"].to_pylist())


class ScoreParts:
    """The `.scores` folder of one report: what earlier runs left, and this run's parts."""

    def __init__(self, out: Path, key: ScoreKey, *, every: int = 1000, seconds: float = 30.0):
        self.folder = out / FOLDER
        self.key = key
        self.every = every
        self.seconds = seconds
        self.run = uuid.uuid4().hex[:8]
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._written: list[pa.Table] = []
        self._parts = 0
        self._last = time.monotonic()
        self._pixels: list[pa.Table] = []
        self._pixel_rows = 0
        self._pixel_parts = 0

    def earlier(self, content: Callable[[str], str | None]) -> Earlier:
        """The rows earlier runs left for this same key whose image `content` still gives;
        the folder is emptied (and keyed) when the key differs."""
        note = self._check_key()
        tables = []
        for path in sorted(self.folder.glob("part-*.parquet")):
            try:  # whole, since renamed when written; unless the machine itself went down
                tables.append(pq.read_table(path, schema=PART_SCHEMA))
            except (pa.ArrowInvalid, OSError):
                path.unlink()  # its images are scored again
        for tmp in [*self.folder.glob("*.tmp"), *self.folder.glob(".*.tmp-*")]:
            tmp.unlink()
        if not tables:
            return Earlier(PART_SCHEMA.empty_table(), note=note)
        rows = pa.concat_tables(tables)
        ids, contents = rows["image_id"].to_pylist(), rows["content"].to_pylist()
        valid = [content(i) == c for i, c in zip(ids, contents, strict=True)]
        if self.key.pixels:  # a score whose kept pixels were lost is made again
            held = self._pixel_keys()
            failed = pc.is_null(rows["prob"]).to_pylist()
            valid = [
                v and (f or (i, c) in held)
                for v, f, i, c in zip(valid, failed, ids, contents, strict=True)
            ]
        kept = _first_per_image(rows.filter(pa.array(valid, pa.bool_())))
        return Earlier(kept, dropped=valid.count(False))

    def _pixel_files(self) -> list[Path]:
        return sorted(self.folder.glob("pixels-*.parquet"))

    def _pixel_keys(self) -> set[tuple[str, str]]:
        """(image id, content) of every kept picture in a whole pixel part (one the
        machine lost is removed)."""
        held: set[tuple[str, str]] = set()
        for path in self._pixel_files():
            try:
                table = pq.read_table(path, columns=["image_id", "content"])
            except (pa.ArrowInvalid, OSError):
                path.unlink()
                continue
            ids, contents = table["image_id"].to_pylist(), table["content"].to_pylist()
            held.update(zip(ids, contents, strict=True))
        return held

    def _check_key(self) -> str | None:
        key_file = self.folder / KEY_FILE
        note = None
        if key_file.is_file() and {"pixels": 0, **json.loads(key_file.read_text())} != asdict(
            self.key
        ):
            shutil.rmtree(self.folder)
            note = "scores of an interrupted run were made by another model or input: not used"
        with writing(self.folder):
            self.folder.mkdir(exist_ok=True)
        if not key_file.is_file():
            write_text_atomic(key_file, json.dumps(asdict(self.key), indent=1) + "\n")
        return note

    def add(self, batch: pa.Table, content: Callable[[str], str | None]) -> None:
        """Rows of IMAGE_SCHEMA (and `kept` pixels) as they come back; scores written out
        every `every` rows or `seconds`, kept pixels every PIXEL_ROWS rows."""
        digests = pa.array([content(i) for i in batch["image_id"].to_pylist()], pa.string())
        table = batch.select(IMAGE_SCHEMA.names).cast(IMAGE_SCHEMA)
        self._buffer.append(table.append_column("content", digests))
        self._buffered += batch.num_rows
        if KEPT_PIXELS in batch.column_names:
            pixels = pa.table(
                {"image_id": batch["image_id"], "content": digests, "pixels": batch[KEPT_PIXELS]}
            )
            self._pixels.append(pixels.filter(pc.is_valid(batch["prob"])))
            self._pixel_rows += self._pixels[-1].num_rows
            if self._pixel_rows >= PIXEL_ROWS:
                self._flush_pixels()
        if self._buffered >= self.every or time.monotonic() - self._last >= self.seconds:
            self.flush()

    def _flush_pixels(self) -> None:
        if self._pixel_rows:
            path = self.folder / f"pixels-{self.run}-{self._pixel_parts:05d}.parquet"
            with atomic(path) as tmp:
                pq.write_table(pa.concat_tables(self._pixels), tmp, compression="zstd")
            self._pixel_parts += 1
        self._pixels, self._pixel_rows = [], 0

    def flush(self) -> None:
        """The buffered rows as a part (their kept pixels first: a score part on disk has
        its pixels on disk)."""
        self._last = time.monotonic()
        self._flush_pixels()
        if not self._buffered:
            return
        table = pa.concat_tables(self._buffer)
        path = self.folder / f"part-{self.run}-{self._parts:05d}.parquet"
        with atomic(path) as tmp:  # a full disk: one line naming the part, no temporary left
            pq.write_table(table, tmp, compression="zstd")
        self._written.append(table)
        self._parts += 1
        self._buffer, self._buffered = [], 0

    def this_run(self) -> pa.Table:
        """Every row this run added (flushed)."""
        return pa.concat_tables(self._written) if self._written else PART_SCHEMA.empty_table()

    def kept(self, wanted: list[str], content: Callable[[str], str | None]) -> pa.Table:
        """The kept pixels of the `wanted` images (image_id, pixels), those made from their
        current content; an image not kept has no row."""
        files = self._pixel_files()
        if not files or not wanted:
            return pa.table(
                {"image_id": pa.array([], pa.string()), "pixels": pa.array([], pa.binary())}
            )
        table = pads.dataset([str(f) for f in files], format="parquet").to_table(
            filter=pads.field("image_id").isin(wanted)
        )
        ids, contents = table["image_id"].to_pylist(), table["content"].to_pylist()
        current = [content(i) == c for i, c in zip(ids, contents, strict=True)]
        table = _first_per_image(table.filter(pa.array(current, pa.bool_())))
        return table.select(["image_id", "pixels"])

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _first_per_image(rows: pa.Table) -> pa.Table:
    """One row per image. An image scored in two parts (a run after one that dropped its
    score as changed, the file then restored) has the same score in both: same model, same
    content."""
    first: dict[str, int] = {}
    for i, image_id in enumerate(rows["image_id"].to_pylist()):
        first.setdefault(image_id, i)
    if len(first) == rows.num_rows:
        return rows
    return rows.take(pa.array(sorted(first.values()), pa.int64()))


def scored_and_problems(rows: pa.Table) -> tuple[pa.Table, pa.Table]:
    """All rows, sorted by image (a resumed run's report equals an uninterrupted one's):
    those with a probability, and those quarantined."""
    rows = rows.sort_by([("image_id", "ascending")])
    ok = pc.is_valid(rows["prob"])
    return rows.filter(ok), rows.filter(pc.invert(ok))
