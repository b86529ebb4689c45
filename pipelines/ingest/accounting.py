"""Every input of an ingest run accounted for, and the counts printed.

The recipe: `check_counts` reads the written shards' small columns (`_image_counts`: rows,
per body part × label, per split, image ids) and holds the law, found = ingested +
quarantined with the same image ids, before any manifest is written (else `IngestError`);
`format_result` is the one-screen summary `mura ingest` prints from the manifest.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mura_core.archive.rows import PreparedRows
from mura_core.listing import Listing
from mura_core.shards import ManifestCounts, ShardsLayout
from pipelines.ingest.config import IngestError, IngestResult


def _image_counts(
    images_dir: Path,
) -> tuple[int, dict[str, dict[str, int]], dict[str, int], list[str]]:
    """Rows, per body part × label, per split, and image ids — from the written shards."""
    by_part: dict[str, Counter[str]] = {}
    by_split: Counter[str] = Counter()
    ids: list[str] = []
    total = 0
    for path in sorted(images_dir.glob("*.parquet")):
        table = pq.read_table(path, columns=["image_id", "body_part", "label", "split"])
        total += table.num_rows
        ids.extend(table.column("image_id").to_pylist())
        for part, label, split in zip(
            table.column("body_part").to_pylist(),
            table.column("label").to_pylist(),
            table.column("split").to_pylist(),
            strict=True,
        ):
            by_part.setdefault(part, Counter())["unlabelled" if label is None else str(label)] += 1
            by_split[split] += 1
    return total, {k: dict(v) for k, v in sorted(by_part.items())}, dict(by_split), ids


def check_counts(
    layout: ShardsLayout, listing: Listing, prepared: PreparedRows, quarantine: pa.Table
) -> tuple[ManifestCounts, dict[str, dict[str, int]], dict[str, int]]:
    """Every input in exactly one place (a shard row or the quarantine), else IngestError
    and no manifest; the counts, per body part × label and per split."""
    ingested, by_part, by_split, ids = _image_counts(layout.images)
    counts = ManifestCounts(
        found=len(prepared.rows) + len(prepared.problems),
        ingested=ingested,
        quarantined=quarantine.num_rows,
        junk_skipped=listing.junk_skipped,
    )
    expected_ids = Counter(r.image_id for r in prepared.rows)
    seen_ids = Counter(ids) + Counter(x for x in quarantine.column("image_id").to_pylist() if x)
    if counts.found != ingested + counts.quarantined or seen_ids != expected_ids:
        raise IngestError(
            f"accounting failed: found {counts.found} != ingested {ingested} + "
            f"quarantined {counts.quarantined} (or image ids differ); "
            "no manifest written"
        )
    return counts, by_part, by_split


def format_result(result: IngestResult) -> str:
    """The one-screen summary printed at the end of `mura ingest`."""
    m, c = result.manifest, result.manifest.counts
    lines = [
        f"shards: {result.out}  ({m.kind} source {m.source})",
        f"found {c.found} = ingested {c.ingested} + quarantined {c.quarantined}"
        f"   (junk skipped: {c.junk_skipped})   law holds: {m.law_holds}",
        f"{m.shards} shard file(s), {m.size}x{m.size} px, {result.seconds:.1f}s "
        f"({(c.ingested - result.resumed) / max(result.seconds, 1e-9):.1f} images/s"
        + (f"; {result.resumed} kept from an interrupted run" if result.resumed else "")
        + ")",
        "splits: " + ", ".join(f"{k} {v}" for k, v in sorted(m.by_split.items())),
        f"{'body part':<12} {'normal':>7} {'abnormal':>9} {'unlabelled':>11}",
    ]
    for part, counts in m.by_body_part_and_label.items():
        lines.append(
            f"{part:<12} {counts.get('0', 0):>7} {counts.get('1', 0):>9} "
            f"{counts.get('unlabelled', 0):>11}"
        )
    if m.quarantine_by_type:
        lines.append(
            "quarantined by type: "
            + ", ".join(f"{k} {v}" for k, v in sorted(m.quarantine_by_type.items()))
        )
    return "\n".join(lines)
