"""The plain image-folder source, with and without a labels CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mura_core.archive import SourceError, detect_kind, list_archive, summarize
from mura_core.body_parts import BodyPart
from mura_core.listing import Split


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)


def test_without_csv_each_image_is_its_own_unlabelled_study(tmp_path: Path) -> None:
    _png(tmp_path / "wrist" / "a.png")
    _png(tmp_path / "wrist" / "b.jpg")
    _png(tmp_path / "misc" / "c.png")
    (tmp_path / ".DS_Store").write_bytes(b"x")
    assert detect_kind(tmp_path) == "folder"
    listing = list_archive(tmp_path)
    assert len(listing.studies()) == 3 and listing.junk_skipped == 1
    parts = {r.relpath: r.body_part for r in listing.refs}
    assert parts["wrist/a.png"] is BodyPart.WRIST and parts["misc/c.png"] is BodyPart.OTHER
    assert all(r.label is None and r.split is None for r in listing.refs)


def test_csv_groups_labels_and_reports_missing_files(tmp_path: Path) -> None:
    for name in ("s1_a.png", "s1_b.png", "s2_a.png", "loose.png"):
        _png(tmp_path / "img" / name)
    (tmp_path / "img" / "scan.tif").write_bytes(b"II*\x00")
    (tmp_path / "labels.csv").write_text(
        "path,study,patient,label,body_part,split\n"
        "img/s1_a.png,S1,P1,abnormal,XR_HAND,train\n"
        "img/s1_b.png,S1,P1,abnormal,XR_HAND,train\n"
        "img/s2_a.png,S2,P1,0,elbow,valid\n"
        "img/gone.png,S3,P2,1,XR_HAND,train\n"
    )
    listing = list_archive(tmp_path)
    studies = listing.studies()
    assert set(studies) == {"S1", "S2", "img/loose"}
    assert [r.label for r in studies["S1"]] == [1, 1]
    assert studies["S2"][0].body_part is BodyPart.ELBOW and studies["S2"][0].split is Split.VALID
    assert studies["img/loose"][0].label is None
    assert {p.error_type for p in listing.problems} == {"missing_file", "not_an_image"}
    assert listing.junk_skipped == 0  # the labels CSV itself is neither junk nor an input


def test_bad_label_value_fails_fast(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    (tmp_path / "labels.csv").write_text("path,label\na.png,maybe\n")
    with pytest.raises(SourceError, match="unrecognised label"):
        list_archive(tmp_path)
    (tmp_path / "labels.csv").write_text("file,label\na.png,1\n")
    with pytest.raises(SourceError, match="missing column"):
        list_archive(tmp_path)


def test_a_row_with_more_cells_than_the_header_lists(tmp_path: Path) -> None:
    """Found by fuzzing (tests/fuzz): `path\\nimg.png,0` crashed the CSV reader."""
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "img.png")
    (tmp_path / "labels.csv").write_text("path\nimg.png,0,extra\n")
    listing = list_archive(tmp_path)
    assert [r.relpath for r in listing.refs] == ["img.png"] and listing.problems == ()


def test_body_parts_outside_muras_seven_keep_their_names(tmp_path: Path) -> None:
    """FracAtlas names `leg`, `hip` and `mixed`: each is its own row of the table, never
    lumped into OTHER; a MURA part in any spelling is still the MURA part."""
    for name in ("a", "b", "c", "d", "e"):
        _png(tmp_path / f"{name}.png")
    (tmp_path / "labels.csv").write_text(
        "path,label,body_part\n"
        "a.png,1,leg\nb.png,0,Hip\nc.png,0,Lower Leg\nd.png,1,hand\ne.png,0,\n"
    )
    listing = list_archive(tmp_path)
    parts = {r.relpath: r.body_part for r in listing.refs}
    assert parts == {
        "a.png": "leg",
        "b.png": "hip",
        "c.png": "lower_leg",
        "d.png": BodyPart.HAND,
        "e.png": BodyPart.OTHER,
    }
    table = summarize(listing)
    assert list(table) == ["XR_HAND", "hip", "leg", "lower_leg", "OTHER"]
    assert table["leg"].positive == 1 and table["hip"].studies == 1
