"""What screening reads: a raw archive (decoded on the fly) or a shards folder.

Either way the driver only lists (raw) or counts (shards); pixels are read and decoded in
Ray tasks: for scoring (`input_dataset`), and a folder's files again for the few pictures
after it (`picture_dataset`; shards hold their pixels, `stored_pixels`; a PACS is not
fetched twice, its instances' pictures are kept while scoring). Identifiers are
pseudonymized before anything is written: raw rows on the driver as ingest does, keys of
shards ingested without pseudonyms inside the scoring actors.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray.data
from pydicom.dataset import Dataset

from mura_core.archive import AccessPolicy, ArchiveFiles
from mura_core.pacs.address import is_pacs_address
from mura_core.pacs.client import Pacs, PacsOptions
from mura_core.privacy import Pseudonymizer, pseudonym_columns, read_reidentify
from mura_core.records import ImageRow, Listing, QuarantineRow, ScoredImage
from mura_core.schema import column_names
from mura_core.shards import (
    IMAGE_COLUMNS,
    ShardsLayout,
    read_image_rows,
    read_quarantine_rows,
)
from mura_core.sources import SourceError, list_source
from mura_core.sources.common import require_dir
from mura_core.sources.pacs import list_pacs
from mura_core.splits import SplitConfig

from ..console import console
from ..ingest.decode import decode_batch, rows_per_batch
from ..ingest.rows import (
    digest_lines,
    digest_studies,
    image_contents,
    image_lines,
    prepare_rows,
)
from ..runtime import cluster_cpus
from ..shardsets import shard_stats
from ..tracking import file_digest

# what the screening actor reads of a shard row: its pixels and the `ScoredImage` columns
SHARD_COLUMNS = ["pixels", *(n for n in column_names(ScoredImage) if n in IMAGE_COLUMNS)]
ROWS_PER_BLOCK = 256


@dataclass(frozen=True)
class ScreenInput:
    """One screening's input, listed and checked, not yet read."""

    kind: str  # "shards", or the raw source's kind (mura, dicom, folder)
    root: Path
    digest: str
    images: int
    problems: list[QuarantineRow]  # known before decoding (listing / ingest quarantine)
    reidentify: list[tuple[str, str, str]]  # (kind, pseudonym, original)
    rows: list[ImageRow] | None = None  # raw: one prepared row per image
    shard_size: int | None = None
    pseudonymizer: Pseudonymizer | None = None  # shards whose keys are not pseudonyms yet
    study_digests: dict[str, str] | None = None  # raw: study key → digest of its image set
    pacs: Pacs | None = None  # a PACS source: rows' paths are locators, fetched in tasks
    headers: dict[str, Dataset] | None = None  # PACS: SOP Instance UID → listed header
    notes: tuple[str, ...] = ()  # what listing said (studies matched, instances skipped)
    contents: dict[str, str] | None = None  # raw: image id → digest of its content line
    files: ArchiveFiles | None = None  # a raw folder: how its files are read
    skip: frozenset[str] = frozenset()  # shards: image ids (as stored) scored before

    def only_studies(self, keys: set[str]) -> ScreenInput:
        """The same raw input narrowed to some studies (nightly: the new ones)."""
        if self.rows is None:
            raise ValueError("only a raw archive can be narrowed to studies")
        rows = [r for r in self.rows if r.study_key in keys]
        contents = None
        if self.contents is not None:
            contents = {r.image_id: self.contents[r.image_id] for r in rows}
        return replace(self, rows=rows, images=len(rows), contents=contents)

    def content(self, image_id: str) -> str | None:
        """What an image's score was made from (its file's line; a shard set's manifest),
        by the image id a score carries; None when it is not in this input."""
        if self.contents is None:
            return self.digest
        return self.contents.get(image_id)

    def without(self, done: set[str]) -> ScreenInput:
        """The input less the images already scored (ids as the scores carry them)."""
        if not done:
            return self
        if self.rows is not None:
            rows = [r for r in self.rows if r.image_id not in done]
            return replace(self, rows=rows, images=len(rows))
        stored = done
        if self.pseudonymizer is not None:  # scores carry pseudonyms, the shards originals
            stored = {o for k, p, o in self.reidentify if k == "image" and p in done}
        return replace(self, images=self.images - len(stored), skip=frozenset(stored))


def is_shards(path: Path) -> bool:
    return ShardsLayout(path).marker.is_file() or ShardsLayout(path).manifest.is_file()


def _from_listing(listing: Listing, source: object, pseudonymize: str, **extra: Any) -> ScreenInput:
    """A listed raw archive or PACS as rows ready to decode (pseudonymized, real paths)."""
    if not listing.refs and not listing.problems:
        raise SourceError(f"{source}: the archive holds no images")
    if not listing.refs:
        raise SourceError(
            f"{source}: none of its {len(listing.problems)} file(s) can be read as an image"
        )
    prepared = prepare_rows(listing, SplitConfig(), pseudonymize=pseudonymize)
    rows = prepared.rows
    lines = image_lines(rows, files=extra.get("pacs") is None)
    return ScreenInput(
        kind=listing.kind,
        root=Path(listing.root),
        digest=digest_lines(lines.values()),
        images=len(rows),
        problems=prepared.problems,
        reidentify=prepared.reidentify,
        rows=rows,
        study_digests=digest_studies(rows, lines),
        contents=image_contents(lines),
        notes=listing.notes,
        **extra,
    )


def open_raw(
    source: Path,
    *,
    kind: str | None = None,
    labels: Path | None = None,
    pseudonymize: str = "always",
    access: AccessPolicy | None = None,
) -> ScreenInput:
    """List a raw archive and prepare its rows (pseudonymized, with the real paths)."""
    listing = list_source(source, kind=kind, labels=labels, access=access)
    files = ArchiveFiles.at(listing.root, access)
    return _from_listing(listing, source, pseudonymize, files=files)


def open_pacs(
    address: str,
    options: PacsOptions,
    *,
    labels: Path | None = None,
    pseudonymize: str = "always",
) -> ScreenInput:
    """Check the PACS (fail fast), list it from headers, prepare rows to fetch in tasks."""
    pacs = options.connect(address)
    pacs.check()
    found = list_pacs(pacs, options.query, labels)
    if not found.listing.refs:
        raise SourceError(f"{pacs.address}: no images match ({'; '.join(found.listing.notes)})")
    console.print("\n".join(found.listing.notes))
    return _from_listing(
        found.listing, pacs.address, pseudonymize, pacs=pacs, headers=found.headers
    )


def _shard_reidentify(layout: ShardsLayout, pseudo: Pseudonymizer) -> list[tuple[str, str, str]]:
    entries: set[tuple[str, str, str]] = set()
    columns = pseudonym_columns(IMAGE_COLUMNS)
    for path in layout.image_files():
        table = pq.read_table(path, columns=list(columns))
        for name, kind in columns.items():
            for value in set(table.column(name).to_pylist()) - {None}:
                entries.add((kind, pseudo(value, kind), value))
    return sorted(entries)


def open_shards(root: Path, *, pseudonymize: bool = True) -> ScreenInput:
    """Check a shards folder (complete, current schema, not empty) and count it."""
    stats = shard_stats(root)
    images = sum(stats.counts.values())
    if images == 0:
        raise SourceError(f"{root}: the shards hold no images")
    layout = ShardsLayout(root)
    pseudo = None
    reidentify: list[tuple[str, str, str]] = []
    if pseudonymize and not stats.manifest.pseudonymized:
        pseudo = Pseudonymizer.from_site()
        reidentify = _shard_reidentify(layout, pseudo)
    elif layout.reidentify.is_file():
        reidentify = read_reidentify(layout.reidentify)
    problems = [row.after("ingest") for row in read_quarantine_rows(root)]
    if pseudo is not None:
        problems = [row.pseudonymized(pseudo) for row in problems]
    return ScreenInput(
        kind="shards",
        root=root,
        digest=file_digest(layout.manifest),
        images=images,
        problems=problems,
        reidentify=reidentify,
        shard_size=stats.size,
        pseudonymizer=pseudo,
    )


def open_input(
    source: Path | str,
    *,
    kind: str | None = None,
    labels: Path | None = None,
    pseudonymize: str = "always",
    pacs: PacsOptions | None = None,
    access: AccessPolicy | None = None,
) -> ScreenInput:
    """A PACS address, a shards folder or a raw archive (shards: by marker/manifest)."""
    if is_pacs_address(source):
        if kind is not None:
            raise SourceError(f"{source} is a PACS: --kind does not apply")
        return open_pacs(
            str(source), pacs or PacsOptions(), labels=labels, pseudonymize=pseudonymize
        )
    root = require_dir(source)
    if is_shards(root):
        if kind is not None or labels is not None:
            raise SourceError(f"{root} is a shards folder: --kind and --labels do not apply")
        return open_shards(root, pseudonymize=pseudonymize != "never")
    return open_raw(root, kind=kind, labels=labels, pseudonymize=pseudonymize, access=access)


def input_dataset(
    inp: ScreenInput, size: int, *, decode_batch_size: int = 16, keep: int | None = None
) -> ray.data.Dataset:
    """The lazy dataset of rows to score: shard rows, or raw rows decoded in CPU tasks
    (with `keep`, each also at keep px, `kept`: a PACS source's pictures)."""
    if inp.rows is None:
        ds = ray.data.read_parquet(str(ShardsLayout(inp.root).images))
        ds = ds.select_columns(SHARD_COLUMNS)
        if inp.skip:
            ids = pa.array(sorted(inp.skip), pa.string())
            ds = ds.map_batches(_drop_ids, batch_format="pyarrow", fn_kwargs={"ids": ids})
        return ds
    n, cpus = len(inp.rows), cluster_cpus()
    decode_batch_size = rows_per_batch(max(size, keep or 0), decode_batch_size)
    blocks = max(1, min(max(-(-n // ROWS_PER_BLOCK), 2 * cpus), -(-n // decode_batch_size)))
    ds = ray.data.from_items([row.to_dict() for row in inp.rows], override_num_blocks=blocks)
    return ds.map_batches(
        decode_batch,
        batch_size=decode_batch_size,
        batch_format="pyarrow",
        fn_kwargs={"size": size, "pacs": inp.pacs, "files": inp.files, "keep": keep},
        num_cpus=1,
    )


def _drop_ids(batch: pa.Table, *, ids: pa.Array) -> pa.Table:
    """Rows whose image is not among `ids` (scored by an earlier, interrupted run)."""
    return batch.filter(pc.invert(pc.is_in(batch["image_id"], value_set=ids)))


def stored_pixels(inp: ScreenInput, image_ids: list[str]) -> pa.Table:
    """A shards folder's pixels of some images (image_id, pixels), by report image id: only
    the row groups that hold them are read (already decoded: nothing to do in a task)."""
    if inp.rows is not None:
        raise ValueError("only a shards folder stores its pixels")
    original = {p: o for k, p, o in inp.reidentify if k == "image"} if inp.pseudonymizer else {}
    ids = {original.get(i, i): i for i in image_ids}
    table = read_image_rows(inp.root, ids, ["image_id", "pixels"])
    renamed = pa.array([ids[i] for i in table["image_id"].to_pylist()], pa.string())
    return table.set_column(0, "image_id", renamed)


def picture_dataset(inp: ScreenInput, image_ids: list[str], size: int) -> ray.data.Dataset:
    """The lazy dataset of some images of a folder (by report image id), decoded in tasks at
    `size` for the evidence pass: one row per image, its `problem` where it no longer
    decodes. (Shards store their pixels: `stored_pixels`; a PACS is not fetched again: its
    pixels were kept by the scoring pass, `parts.ScoreParts.kept`.)"""
    if inp.rows is None or inp.pacs is not None:
        raise ValueError("only a folder's pictures are decoded again")
    by_id = {r.image_id: r for r in inp.rows}
    batch = rows_per_batch(size, 16)
    ds = ray.data.from_items(
        [by_id[i].to_dict() for i in image_ids],
        override_num_blocks=max(1, -(-len(image_ids) // batch)),
    )
    return ds.map_batches(
        decode_batch,
        batch_size=batch,
        batch_format="pyarrow",
        fn_kwargs={"size": size, "files": inp.files},
        num_cpus=1,
    ).select_columns(["image_id", "pixels", "problem"])
