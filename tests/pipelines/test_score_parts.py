"""Score parts (pipelines.screen.parts): what a re-run keeps of an interrupted run's scores.

No Ray here: the parts are Parquet files the driver writes; these tests write them as a run
would, then read them back the way the next run does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from mura_core.shards import KEPT_PIXELS, encode_pixels, pixels_array
from pipelines.screen.parts import ScoreKey, ScoreParts, bundle_digest, scored_and_problems
from pipelines.screen.scoring import IMAGE_SCHEMA

KEY = ScoreKey(
    model=bundle_digest({"weights.pt": b"1"}), pseudonymize="always", kind="mura", root="/a"
)
CONTENTS = {f"im-{i}": f"c{i}" for i in range(10)}


def batch(ids: list[str], *, problem: str | None = None) -> pa.Table:
    rows = [
        {
            "image_id": i,
            "study_key": "st-" + i[-1],
            "prob": None if problem else 0.5,
            "error_type": problem,
            "reason": problem and "cannot decode",
        }
        for i in ids
    ]
    return pa.Table.from_pylist(rows, schema=IMAGE_SCHEMA)


def write_run(out: Path, key: ScoreKey, ids: list[str], every: int) -> ScoreParts:
    parts = ScoreParts(out, key, every=every)
    parts.earlier(CONTENTS.get)
    for i in range(0, len(ids), 2):
        parts.add(batch(ids[i : i + 2]), CONTENTS.get)
    return parts  # killed: the buffer since the last part is lost


def test_rows_written_in_whole_parts_come_back(tmp_path: Path) -> None:
    write_run(tmp_path, KEY, [f"im-{i}" for i in range(7)], every=4)
    # 7 rows in batches of 2: a part at 4 rows (im-0..3); im-4..6 were in the buffer
    (tmp_path / ".scores" / "part-x-00009.parquet.tmp").write_bytes(b"cut off")
    earlier = ScoreParts(tmp_path, KEY).earlier(CONTENTS.get)
    assert sorted(earlier.ids) == [f"im-{i}" for i in range(4)]
    assert earlier.dropped == 0 and earlier.note is None
    assert not list((tmp_path / ".scores").glob("*.tmp"))


def test_changed_or_vanished_images_are_scored_again(tmp_path: Path) -> None:
    write_run(tmp_path, KEY, [f"im-{i}" for i in range(4)], every=2)
    now = {**CONTENTS, "im-1": "changed"}
    del now["im-2"]
    earlier = ScoreParts(tmp_path, KEY).earlier(now.get)
    assert sorted(earlier.ids) == ["im-0", "im-3"] and earlier.dropped == 2


def test_another_model_starts_over_and_says_so(tmp_path: Path) -> None:
    write_run(tmp_path, KEY, [f"im-{i}" for i in range(4)], every=2)
    other = ScoreKey(bundle_digest({"weights.pt": b"2"}), "always", "mura", "/a")
    earlier = ScoreParts(tmp_path, other).earlier(CONTENTS.get)
    assert earlier.rows.num_rows == 0 and "another model" in (earlier.note or "")
    assert not list((tmp_path / ".scores").glob("part-*"))


def test_a_part_the_machine_lost_is_scored_again(tmp_path: Path) -> None:
    write_run(tmp_path, KEY, [f"im-{i}" for i in range(4)], every=2)
    first = sorted((tmp_path / ".scores").glob("part-*.parquet"))[0]
    first.write_bytes(first.read_bytes()[:20])  # renamed, but its data never reached disk
    earlier = ScoreParts(tmp_path, KEY).earlier(CONTENTS.get)
    assert sorted(earlier.ids) == ["im-2", "im-3"] and not first.exists()


def test_an_image_in_two_parts_counts_once(tmp_path: Path) -> None:
    write_run(tmp_path, KEY, ["im-0", "im-1"], every=2)
    write_run(tmp_path, KEY, ["im-1", "im-2"], every=2)  # im-1 scored again (same content)
    earlier = ScoreParts(tmp_path, KEY).earlier(CONTENTS.get)
    assert sorted(earlier.rows["image_id"].to_pylist()) == ["im-0", "im-1", "im-2"]
    assert earlier.dropped == 0


def test_rows_are_sorted_and_split_into_scored_and_quarantined(tmp_path: Path) -> None:
    rows = pa.concat_tables([batch(["im-3", "im-1"]), batch(["im-2"], problem="corrupt")])
    scored, problems = scored_and_problems(rows)
    assert scored["image_id"].to_pylist() == ["im-1", "im-3"]
    assert problems["image_id"].to_pylist() == ["im-2"]


PIXELS = 4  # a PACS screening keeps each frame at this size (here: tiny)
KEEPING = ScoreKey(KEY.model, KEY.pseudonymize, "dicomweb", KEY.root, pixels=PIXELS)


def kept_batch(ids: list[str]) -> pa.Table:
    """Scored rows as a PACS screening's actor returns them: with each frame kept."""
    frames = np.stack([np.full((PIXELS, PIXELS), int(i[-1]), np.uint8) for i in ids])
    return batch(ids).append_column(KEPT_PIXELS, encode_pixels(frames))


def test_kept_pixels_are_written_with_their_scores_and_read_back(tmp_path: Path) -> None:
    parts = ScoreParts(tmp_path, KEEPING, every=4)
    parts.earlier(CONTENTS.get)
    for i in range(0, 6, 2):
        parts.add(kept_batch([f"im-{i}", f"im-{i + 1}"]), CONTENTS.get)
    parts.flush()
    assert len(list((tmp_path / ".scores").glob("pixels-*.parquet"))) == 2  # with each part
    kept = parts.kept(["im-1", "im-4", "im-9"], CONTENTS.get)
    assert sorted(kept["image_id"].to_pylist()) == ["im-1", "im-4"]
    pixels = dict(zip(kept["image_id"].to_pylist(), pixels_array(kept["pixels"]), strict=True))
    assert (pixels["im-4"] == 4).all() and pixels["im-4"].shape == (PIXELS, PIXELS)
    changed = {**CONTENTS, "im-1": "changed"}  # made from another content: not these pixels
    assert parts.kept(["im-1"], changed.get).num_rows == 0


def test_a_score_whose_kept_pixels_were_lost_is_made_again(tmp_path: Path) -> None:
    parts = ScoreParts(tmp_path, KEEPING, every=2)
    parts.earlier(CONTENTS.get)
    parts.add(kept_batch(["im-0", "im-1"]), CONTENTS.get)
    parts.add(kept_batch(["im-2", "im-3"]), CONTENTS.get)
    first = sorted((tmp_path / ".scores").glob("pixels-*.parquet"))[0]
    first.write_bytes(first.read_bytes()[:20])  # its data never reached the disk
    earlier = ScoreParts(tmp_path, KEEPING).earlier(CONTENTS.get)
    assert sorted(earlier.ids) == ["im-2", "im-3"] and earlier.dropped == 2
    assert not first.exists()
