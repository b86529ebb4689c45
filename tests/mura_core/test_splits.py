"""The train / val / test split: by patient, stratified by label and body part, seeded,
independent of listing order; or as a user's split file says."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from mura_core.errors import ConfigError
from mura_core.listing import ImageRef, Split
from mura_core.locations import FileLocation
from mura_core.splits import SplitConfig, assign_splits, read_split_file, split_lines


def _refs(n_by_stratum: dict[tuple[str, int], int]) -> list[ImageRef]:
    refs = []
    for (part, label), n in n_by_stratum.items():
        for i in range(n):
            key = f"{part}-{label}-{i}"
            refs.append(
                ImageRef(
                    FileLocation(f"/a/{key}.jpg"), f"{key}.jpg", key, key, key, part, label=label
                )
            )
    return refs


def test_every_stratum_keeps_its_share_in_every_split() -> None:
    """FracAtlas-like counts: each (body part, label) stratum is cut at the fractions, so
    the 10 fractured shoulders are spread 2 / 1 / 7, never all in train by chance."""
    counts = {("XR_HAND", 1): 379, ("XR_HAND", 0): 902, ("XR_SHOULDER", 1): 10, ("leg", 1): 212}
    refs = _refs(counts)
    splits = assign_splits(refs, SplitConfig(seed=0, val_fraction=0.1, test_fraction=0.2))
    got = Counter((r.body_part, r.label, s) for r, s in zip(refs, splits, strict=True))
    for (part, label), n in counts.items():
        assert got[(part, label, "test")] == round(0.2 * n), (part, label)
        assert abs(got[(part, label, "val")] - 0.1 * n) <= 1, (part, label)
    assert got[("XR_SHOULDER", 1, "test")] == 2 and got[("XR_SHOULDER", 1, "val")] == 1


def test_the_split_is_seeded_and_independent_of_listing_order() -> None:
    refs = _refs({("XR_HAND", 1): 30, ("XR_HAND", 0): 70})
    cfg = SplitConfig(seed=3, val_fraction=0.1, test_fraction=0.2)
    first = dict(zip((r.image_id for r in refs), assign_splits(refs, cfg), strict=True))
    backwards = refs[::-1]
    again = dict(zip((r.image_id for r in backwards), assign_splits(backwards, cfg), strict=True))
    assert first == again
    other = assign_splits(refs, SplitConfig(seed=4, val_fraction=0.1, test_fraction=0.2))
    assert list(first.values()) != other


def test_published_splits_and_patients_stay_whole() -> None:
    """MURA's valid stays test; val is cut from train by patient, never splitting one."""
    refs = [
        ImageRef(
            FileLocation(f"/a/{p}-{k}.png"),
            f"{p}-{k}.png",
            f"{p}-{k}",
            f"s{p}",
            f"p{p}",
            "XR_WRIST",
            label=p % 2,
            split=Split.TRAIN,
        )
        for p in range(40)
        for k in range(2)
    ] + [
        ImageRef(
            FileLocation("/a/v.png"),
            "v.png",
            "v",
            "sv",
            "pv",
            "XR_WRIST",
            label=1,
            split=Split.VALID,
        )
    ]
    splits = assign_splits(refs, SplitConfig(val_fraction=0.1))
    by_patient: dict[str, set[str]] = {}
    for ref, split in zip(refs, splits, strict=True):
        by_patient.setdefault(ref.patient_key, set()).add(split)
    assert all(len(s) == 1 for s in by_patient.values())
    assert by_patient["pv"] == {"test"}
    assert Counter(next(iter(s)) for s in by_patient.values())["val"] == 4


def test_a_small_archive_still_gives_val_and_test_both_labels() -> None:
    """A few negative patients among many positive ones (a 90-study synthetic archive has
    such strata): the fractions alone would give val none of them, and val with a single
    class can neither rank nor choose a threshold. Each requested split takes one."""
    refs = _refs({("XR_WRIST", 1): 40, ("XR_WRIST", 0): 5})
    splits = assign_splits(refs, SplitConfig(seed=0, val_fraction=0.07, test_fraction=0.1))
    got = Counter((r.label, s) for r, s in zip(refs, splits, strict=True))
    assert got[(0, "val")] == 1 and got[(0, "test")] == 1 and got[(0, "train")] == 3
    assert got[(1, "val")] >= 1 and got[(1, "test")] >= 1
    lone = _refs({("XR_WRIST", 1): 40, ("XR_WRIST", 0): 1})
    alone = assign_splits(lone, SplitConfig(seed=0, val_fraction=0.07, test_fraction=0.1))
    assert alone[-1] == "train"  # the only negative patient stays where it can be learnt


def test_a_split_file_decides_and_round_trips(tmp_path: Path) -> None:
    refs = _refs({("leg", 0): 3})
    text = split_lines([r.relpath for r in refs], ["test", "train", "val"])
    (tmp_path / "split.csv").write_text(text)
    cfg = SplitConfig(split_file=str(tmp_path / "split.csv"))
    assert assign_splits(refs, cfg) == ["test", "train", "val"]
    assert read_split_file(tmp_path / "split.csv") == {
        "leg-0-0.jpg": "test",
        "leg-0-1.jpg": "train",
        "leg-0-2.jpg": "val",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file,split\na.jpg,test\n", "needs the columns path,split"),
        ("path,split\na.jpg,valid\n", "line 2: split 'valid' is not one of train, val, test"),
        ("path,split\na.jpg,test\na.jpg,train\n", "line 3: a.jpg is given two splits"),
        ("path,split\na.jpg,test\n", "names no split for 2 of 3 listed images"),
    ],
)
def test_a_bad_split_file_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "s.csv").write_text(text)
    refs = [
        ImageRef(FileLocation(f"/r/{n}"), n, n, n, n, "leg") for n in ("a.jpg", "b.jpg", "c.jpg")
    ]
    with pytest.raises(ConfigError, match=message):
        assign_splits(refs, SplitConfig(split_file=str(tmp_path / "s.csv")))
    with pytest.raises(ConfigError, match="split file not found"):
        read_split_file(tmp_path / "gone.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(ConfigError, match="not a readable CSV"):
        read_split_file(tmp_path / "bin.csv")
