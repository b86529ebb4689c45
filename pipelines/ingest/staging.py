"""OUT as `mura ingest` writes it, never half done: checked, staged, swapped into place.

The recipe: `check_out` (OUT is new, empty, or shards of this same source; writable: checked
without writing anything) → `staging_folder` (this exact input's staging folder, named by
`input_key`, a digest of its rows and file sizes, the size and pseudonymization; the whole
files an interrupted run left there are kept, their image ids returned; other inputs'
staging folders removed) → Ray writes the other images into it (a write that fails for want
of space: `raise_write_failure`, one line naming the folder) → `collect_quarantine` moves
problem rows out of the staged files → `swap_into_place` replaces the previous set (manifest
first out; images, quarantine, split file, re-identification map in).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mura_core.archive.rows import PreparedRows, image_lines
from mura_core.outputs import atomic, check_writable, is_empty, write_text_atomic, writing
from mura_core.privacy import write_reidentify
from mura_core.records import QuarantineRow
from mura_core.shards import ShardsLayout, quarantine_table
from mura_core.splits import split_lines
from pipelines.ingest.config import IngestConfig, IngestError

STAGING_PREFIX = ".staging-"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # a Ray write task's OSError, by errno
COMPRESSION = "lz4"


def check_out(cfg: IngestConfig, source: Path | str) -> ShardsLayout:
    """OUT must be new, empty, or shards of this same source (unless --force), and
    writable: checked without writing anything (`run_ingest` claims it after)."""
    layout = ShardsLayout(cfg.out.expanduser().resolve())
    root = layout.root
    if root.exists() and not root.is_dir():
        raise IngestError(f"output {root} exists and is not a folder")
    if root.is_dir() and not is_empty(root) and not layout.marker.is_file():
        raise IngestError(
            f"output {root} is not empty and holds no shards: choose a new or "
            "empty folder (nothing is overwritten)"
        )
    if layout.marker.is_file() and not cfg.force:
        previous = layout.marker.read_text().strip()
        if previous and previous != str(source):
            raise IngestError(
                f"output {root} holds shards of another source ({previous}): "
                "choose another folder, or pass --force to replace them"
            )
    check_writable(root, IngestError)
    return layout


def input_key(cfg: IngestConfig, source: Path | str, prepared: PreparedRows) -> str:
    """A digest of everything the staged rows are made of: every row (ids, split, label,
    path) with its file's size, the image size and the pseudonymization."""
    h = hashlib.sha256(json.dumps([str(source), cfg.size, prepared.pseudonymized]).encode())
    lines = image_lines(prepared.rows)
    for row in sorted(prepared.rows, key=lambda r: r.image_id):
        h.update(json.dumps([row.to_dict(), lines[row.image_id]], default=str).encode())
    return h.hexdigest()[:16]


def staging_folder(layout: ShardsLayout, key: str) -> tuple[Path, set[str]]:
    """This input's staging folder and the image ids an interrupted run already wrote there
    (whole files only: a file the kill cut off is removed, its images decoded again); the
    staging folders of other inputs are removed."""
    staging = layout.root / f"{STAGING_PREFIX}{key}"
    for stale in layout.root.glob(f"{STAGING_PREFIX}*"):
        if stale != staging:
            shutil.rmtree(stale, ignore_errors=True)
    done: set[str] = set()
    for path in sorted(staging.glob("*.parquet")):
        try:
            ids = pq.read_table(path, columns=["image_id"]).column("image_id").to_pylist()
        except (pa.ArrowInvalid, OSError):
            path.unlink()
            continue
        if done & set(ids):
            raise IngestError(f"{staging}: image ids staged twice (two runs at once?)")
        done.update(ids)
    return staging, done


def collect_quarantine(staging: Path, listing_problems: list[QuarantineRow]) -> pa.Table:
    """Move problem rows out of the staged files into the quarantine table.

    Only the small `problem` column is read per file; the rare file that holds quarantined
    rows is rewritten without them, the others stay as Ray wrote them.
    """
    rows = list(listing_problems)
    for path in sorted(staging.glob("*.parquet")):
        problems = pq.read_table(path, columns=["problem"]).column("problem")
        if problems.null_count == len(problems):
            continue
        table = pq.read_table(path)
        for row in table.filter(pc.is_valid(table["problem"])).drop(["pixels"]).to_pylist():
            problem = row["problem"]
            rows.append(QuarantineRow.decode_failure(row, problem["error_type"], problem["reason"]))
        good = table.filter(pc.is_null(table["problem"]))
        if good.num_rows:  # whole or as it was: a killed or failed write leaves the file
            with atomic(path, IngestError) as tmp:
                pq.write_table(good, tmp, compression=COMPRESSION)
        else:
            path.unlink()
    return quarantine_table(rows)


def swap_into_place(
    layout: ShardsLayout, staging: Path, quarantine: pa.Table, prepared: PreparedRows
) -> None:
    """Replace the previous set: manifest first out, images swapped, quarantine written."""
    layout.manifest.unlink(missing_ok=True)
    if layout.images.exists():
        old = layout.root / f"{STAGING_PREFIX}old-{uuid.uuid4().hex}"
        layout.images.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    staging.rename(layout.images)
    with atomic(layout.quarantine, IngestError) as tmp:
        pq.write_table(quarantine, tmp)
    rows = prepared.rows
    text = split_lines((r.relpath for r in rows), (r.split for r in rows))
    write_text_atomic(layout.split_file, text, IngestError)
    if prepared.pseudonymized:  # its own temporary: swept by `claimed` on a failure
        with writing(layout.reidentify, IngestError):
            write_reidentify(layout.reidentify, prepared.reidentify)
    else:
        layout.reidentify.unlink(missing_ok=True)


def raise_write_failure(exc: BaseException, staging: Path) -> None:
    """A Ray write task that failed for want of space (its OSError, however Ray wrapped
    it): one line naming the staging folder, which keeps only its whole files (the re-run
    decodes the rest). Anything else is left to propagate."""
    number = None
    seen: list[BaseException] = []
    err: BaseException | None = exc
    while err is not None and err not in seen and number is None:
        seen.append(err)
        if isinstance(err, OSError) and err.errno in _DISK_FULL:
            number = err.errno
        err = getattr(err, "cause", None) or err.__cause__
    text = " ".join(str(exc).split())
    for candidate in _DISK_FULL:
        if number is None and f"errno {candidate}]" in text.lower():
            number = candidate
    if number is None:
        return
    for path in staging.glob("*.parquet"):  # cut off by the full disk: unreadable
        try:
            pq.read_metadata(path)
        except (pa.ArrowInvalid, OSError):
            path.unlink(missing_ok=True)
    raise IngestError(f"cannot write {staging}: {os.strerror(number)}") from exc
