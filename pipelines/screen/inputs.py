"""What screening reads: an archive (listed, decoded on the fly) or a shards folder.

Either way the driver only lists (an archive: `mura_core.archive`) or counts (shards);
pixels are read and decoded in Ray tasks (`pipelines.archives`) for scoring
(`input_dataset`). For the few pictures after it, a folder's files are decoded again in
tasks (`picture_dataset`); shards hold their pixels (`stored_pixels` reads only the row
groups of the chosen images); a remote archive, a PACS, is not fetched twice: its
instances' pictures are kept while scoring. Identifiers are pseudonymized before anything
is written, through the one function every input row goes through
(`mura_core.archive.pseudonyms`): a listed archive's rows on the driver as ingest's are,
before they reach Ray; the keys of shards ingested without pseudonyms in the task that
reads them, right after the read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray.data

from mura_core.archive import (
    PACS_KINDS,
    AccessPolicy,
    Archive,
    ArchiveSource,
    FolderSource,
    SourceError,
    open_archive,
    parse_source,
)
from mura_core.archive.labels import require_dir
from mura_core.archive.pseudonyms import Pseudonyms, pseudonymize_table
from mura_core.archive.rows import (
    digest_lines,
    digest_studies,
    image_contents,
    image_lines,
    prepare_rows,
)
from mura_core.pacs.client import PacsOptions
from mura_core.privacy import Pseudonymizer, pseudonym_columns, read_reidentify
from mura_core.records import ImageRow, QuarantineRow, ScoredImage
from mura_core.schema import column_names
from mura_core.shards import (
    IMAGE_COLUMNS,
    ShardsLayout,
    read_image_rows,
    read_quarantine_rows,
)
from mura_core.splits import SplitConfig
from pipelines.archives import decoded_dataset, rows_per_batch
from pipelines.registry.tracking import file_digest
from pipelines.runtime.cluster import cluster_cpus
from pipelines.runtime.console import console
from pipelines.shards.shardsets import shard_stats

# what the screening actor reads of a shard row: its pixels and the `ScoredImage` columns
SHARD_COLUMNS = ["pixels", *(n for n in column_names(ScoredImage) if n in IMAGE_COLUMNS)]
ROWS_PER_BLOCK = 256


@dataclass(frozen=True)
class ScreenInput:
    """One screening's input, listed and checked, not yet read."""

    kind: str  # "shards", or the archive's kind (mura, dicom, folder, dicomweb, dimse)
    root: Path
    digest: str
    images: int
    problems: list[QuarantineRow]  # known before decoding (listing / ingest quarantine)
    reidentify: list[tuple[str, str, str]]  # (kind, pseudonym, original)
    rows: list[ImageRow] | None = None  # an archive: one prepared row per image
    shard_size: int | None = None
    pseudonymizer: Pseudonymizer | None = None  # shards whose keys are not pseudonyms yet
    study_digests: dict[str, str] | None = None  # an archive: study key → its image set's digest
    archive: Archive | None = None  # an archive: where its rows' bytes are read (in tasks)
    headers: Mapping[str, Any] | None = None  # PACS: SOP Instance UID → listed header
    notes: tuple[str, ...] = ()  # what listing said (studies matched, instances skipped)
    contents: dict[str, str] | None = None  # an archive: image id → its content line's digest
    skip: frozenset[str] = frozenset()  # shards: image ids (as stored) scored before

    @property
    def remote(self) -> bool:
        """Whether its bytes come over the network (a PACS): read once, when scoring."""
        return self.archive is not None and self.archive.remote

    def only_studies(self, keys: set[str]) -> ScreenInput:
        """The same archive input narrowed to some studies (nightly: the new ones)."""
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


def open_listed(archive: Archive, *, pseudonymize: str = "always") -> ScreenInput:
    """List an opened archive (a folder or a PACS) and prepare its rows: pseudonymized,
    each with its location, read in the decoding tasks through `archive`."""
    listing = archive.list()
    if listing.kind in PACS_KINDS:
        if not listing.refs:
            raise SourceError(f"{archive.root}: no images match ({'; '.join(listing.notes)})")
        console.print("\n".join(listing.notes))
    if not listing.refs and not listing.problems:
        raise SourceError(f"{archive.root}: the archive holds no images")
    if not listing.refs:
        raise SourceError(
            f"{archive.root}: none of its {len(listing.problems)} file(s) can be read as an image"
        )
    prepared = prepare_rows(listing, SplitConfig(), pseudonymize=pseudonymize)
    rows = prepared.rows
    lines = image_lines(rows)
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
        archive=archive,
        headers=dict(listing.headers) or None,
    )


def _shard_reidentify(layout: ShardsLayout, pseudo: Pseudonymizer) -> list[tuple[str, str, str]]:
    """The re-identification map of shards' keys: the pseudonyms the read tasks make."""
    pseudonyms = Pseudonyms(pseudo)
    columns = pseudonym_columns(IMAGE_COLUMNS)
    for path in layout.image_files():
        table = pq.read_table(path, columns=list(columns))
        for name, kind in columns.items():
            for value in set(table.column(name).to_pylist()) - {None}:
                pseudonyms(value, kind)
    return pseudonyms.reidentify()


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
    source: Path | str | ArchiveSource,
    *,
    kind: str | None = None,
    labels: Path | None = None,
    pseudonymize: str = "always",
    pacs: PacsOptions | None = None,
    access: AccessPolicy | None = None,
) -> ScreenInput:
    """A shards folder (by marker/manifest), or an archive: a folder or a PACS."""
    parsed = parse_source(source)
    if isinstance(parsed, FolderSource) and is_shards(root := require_dir(parsed.path)):
        if kind is not None or labels is not None:
            raise SourceError(f"{root} is a shards folder: --kind and --labels do not apply")
        return open_shards(root, pseudonymize=pseudonymize != "never")
    archive = open_archive(parsed, kind=kind, labels=labels, access=access, pacs=pacs)
    return open_listed(archive, pseudonymize=pseudonymize)


def input_dataset(
    inp: ScreenInput, size: int, *, decode_batch_size: int = 16, keep: int | None = None
) -> ray.data.Dataset:
    """The lazy dataset of rows to score: shard rows, or an archive's rows decoded in CPU
    tasks (with `keep`, each also at keep px, `kept`: a PACS source's pictures)."""
    if inp.rows is None:
        ds = ray.data.read_parquet(str(ShardsLayout(inp.root).images))
        ds = ds.select_columns(SHARD_COLUMNS)
        if inp.skip:
            ids = pa.array(sorted(inp.skip), pa.string())
            ds = ds.map_batches(_drop_ids, batch_format="pyarrow", fn_kwargs={"ids": ids})
        if inp.pseudonymizer is not None:
            ds = ds.map_batches(
                pseudonymize_table,
                batch_format="pyarrow",
                fn_kwargs={"pseudonymizer": inp.pseudonymizer},
            )
        return ds
    assert inp.archive is not None
    n, cpus = len(inp.rows), cluster_cpus()
    decode_batch_size = rows_per_batch(max(size, keep or 0), decode_batch_size)
    blocks = max(1, min(max(-(-n // ROWS_PER_BLOCK), 2 * cpus), -(-n // decode_batch_size)))
    return decoded_dataset(
        inp.rows, inp.archive, size=size, batch_size=decode_batch_size, blocks=blocks, keep=keep
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
    decodes. (Shards store their pixels: `stored_pixels`; a remote archive, a PACS, is not
    fetched again: its pixels were kept by the scoring pass, `parts.ScoreParts.kept`.)"""
    if inp.rows is None or inp.remote:
        raise ValueError("only a folder's pictures are decoded again")
    assert inp.archive is not None
    by_id = {r.image_id: r for r in inp.rows}
    batch = rows_per_batch(size, 16)
    blocks = max(1, -(-len(image_ids) // batch))
    rows = [by_id[i] for i in image_ids]
    ds = decoded_dataset(rows, inp.archive, size=size, batch_size=batch, blocks=blocks)
    return ds.select_columns(["image_id", "pixels", "problem"])
