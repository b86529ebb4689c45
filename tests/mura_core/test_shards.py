"""The shards manifest: typed, written atomically, version-checked by every reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mura_core.records import QuarantineRow
from mura_core.shards import (
    SCHEMA_VERSION,
    Manifest,
    ManifestCounts,
    ShardsError,
    encode_pixels,
    pixels_array,
    quarantine_table,
    read_image_rows,
    read_images,
    read_quarantine_rows,
)
from mura_core.splits import SplitConfig

MANIFEST_KEYS = {
    "schema_version",
    "tool_version",
    "source",
    "kind",
    "size",
    "rows_per_shard",
    "shards",
    "counts",
    "law_holds",
    "by_body_part_and_label",
    "by_split",
    "quarantine_by_type",
    "splits",
    "pseudonymized",
    "notes",
    "started_at",
    "seconds",
}


def _manifest(**kw) -> Manifest:
    base = dict(
        source="/data/MURA-v1.1",
        kind="mura",
        size=64,
        rows_per_shard=1024,
        shards=0,
        counts=ManifestCounts(found=5, ingested=4, quarantined=1, junk_skipped=2),
        by_body_part_and_label={"XR_HAND": {"0": 3, "unlabelled": 1}},
        by_split={"train": 3, "test": 1},
        quarantine_by_type={"corrupt": 1},
        splits=SplitConfig(seed=3),
        pseudonymized=False,
        notes=("labels from CSV",),
        started_at="2026-11-27T16:00:00+00:00",
        seconds=1.25,
    )
    return Manifest(**{**base, **kw})


def test_manifest_writes_the_documented_keys_and_reads_back(tmp_path: Path) -> None:
    manifest = _manifest()
    path = manifest.write(tmp_path)
    data = json.loads(path.read_text())
    assert set(data) == MANIFEST_KEYS
    assert data["counts"] == {"found": 5, "ingested": 4, "quarantined": 1, "junk_skipped": 2}
    assert data["law_holds"] is True and data["schema_version"] == SCHEMA_VERSION
    assert data["splits"] == {
        "seed": 3,
        "val_fraction": 0.07,
        "test_fraction": 0.2,
        "split_file": None,
    }
    assert Manifest.read(tmp_path) == manifest
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temporary left


def test_law_holds_is_derived_from_the_counts() -> None:
    broken = _manifest(counts=ManifestCounts(found=5, ingested=4, quarantined=0, junk_skipped=0))
    assert broken.law_holds is False and broken.to_json()["law_holds"] is False


def test_every_reader_refuses_a_missing_incomplete_or_older_set(tmp_path: Path) -> None:
    with pytest.raises(ShardsError, match="shards folder not found"):
        Manifest.read(tmp_path / "absent")
    with pytest.raises(ShardsError, match="no manifest.json"):
        read_images(tmp_path)
    _manifest().write(tmp_path)
    data = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**data, "schema_version": 0}))
    with pytest.raises(
        ShardsError, match="shard schema 0, this tool reads 1: re-run `mura ingest`"
    ):
        read_images(tmp_path)
    del data["size"]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ShardsError, match="lacks 'size'"):
        Manifest.read(tmp_path)
    (tmp_path / "manifest.json").write_text("{half a manif")
    with pytest.raises(ShardsError, match="not valid JSON"):
        Manifest.read(tmp_path)


def test_complete_empty_set_reads_as_an_empty_table(tmp_path: Path) -> None:
    _manifest(size=32).write(tmp_path)
    table = read_images(tmp_path)
    assert table.num_rows == 0 and table.schema.field("pixels").type.byte_width == 32 * 32


def test_quarantine_rows_round_trip_through_the_table(tmp_path: Path) -> None:
    rows = [
        QuarantineRow("a.png", None, None, "list", "not_an_image", "empty file"),
        QuarantineRow("b.png", "im-1", "st-1", "decode", "corrupt", "truncated"),
    ]
    assert read_quarantine_rows(tmp_path) == []
    pq.write_table(quarantine_table(rows), tmp_path / "quarantine.parquet")
    assert read_quarantine_rows(tmp_path) == rows
    assert quarantine_table([]).num_rows == 0


def test_some_images_rows_are_read_from_the_row_groups_that_hold_them(tmp_path: Path) -> None:
    _manifest(size=2).write(tmp_path)
    (tmp_path / "images").mkdir()
    ids = [f"im-{i}" for i in range(6)]
    table = pa.table({"image_id": ids, "pixels": encode_pixels(np.arange(24).reshape(6, 2, 2))})
    pq.write_table(table, tmp_path / "images" / "part-0.parquet", row_group_size=2)
    got = read_image_rows(tmp_path, ["im-4", "im-1", "absent"], ["image_id", "pixels"])
    assert sorted(got["image_id"].to_pylist()) == ["im-1", "im-4"]
    pixels = dict(zip(got["image_id"].to_pylist(), pixels_array(got["pixels"]), strict=True))
    assert pixels["im-4"].tolist() == [[16, 17], [18, 19]]
    assert read_image_rows(tmp_path, [], ["image_id"]).num_rows == 0
