"""The MURA-v1.1 source against synthetic archives whose truth we know."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mura_core.archive import SourceError, detect_kind, format_summary, list_archive
from mura_core.body_parts import BodyPart
from mura_core.listing import Split
from mura_core.synth import SynthArchive
from mura_core.synth.writers import study_dir


def _truth(archive: SynthArchive) -> dict[str, tuple[str, int, str, int]]:
    """study folder → (body part, label, split, number of images), from the synth plan."""
    return {
        study_dir(s): (str(s.body_part), s.label, str(s.split), len(s.views))
        for s in archive.studies
    }


def _read_back(root: Path) -> dict[str, tuple[str, int, str, int]]:
    listing = list_archive(root)
    out: dict[str, tuple[str, int, str, int]] = {}
    for refs in listing.studies().values():
        first = refs[0]
        folder = first.image_id.rsplit("/", 1)[0]
        assert {r.label for r in refs} == {first.label}
        assert {r.split for r in refs} == {first.split}
        out[folder] = (str(first.body_part), first.label, str(first.split), len(refs))
    return out


def test_csvs_give_back_exactly_what_was_written(mura_archive: SynthArchive) -> None:
    assert detect_kind(mura_archive.root) == "mura"
    listing = list_archive(mura_archive.root)
    assert listing.kind == "mura" and listing.problems == () and listing.junk_skipped == 0
    assert _read_back(mura_archive.root) == _truth(mura_archive)
    assert len(listing.refs) == mura_archive.n_images
    assert {r.split for r in listing.refs} == {Split.TRAIN, Split.VALID}
    assert any("CSVs used" in n for n in listing.notes)


def test_labels_come_from_the_csv_not_the_folder_name(
    mura_archive: SynthArchive, tmp_path: Path
) -> None:
    root = tmp_path / "copy"
    shutil.copytree(mura_archive.root, root)
    csv_path = root / "MURA-v1.1" / "train_labeled_studies.csv"
    lines = csv_path.read_text().splitlines()
    path, label = lines[0].rsplit(",", 1)
    lines[0] = f"{path},{1 - int(label)}"
    csv_path.write_text("\n".join(lines) + "\n")
    listing = list_archive(root)
    rel = path.removeprefix("MURA-v1.1/").rstrip("/")
    flipped = [r for r in listing.refs if r.image_id.startswith(rel + "/")]
    assert flipped and all(r.label == 1 - int(label) for r in flipped)
    assert any("CSV label differs" in n for n in listing.notes)


def test_without_csvs_labels_come_from_folder_names(
    mura_archive: SynthArchive, tmp_path: Path
) -> None:
    root = tmp_path / "nocsv"
    shutil.copytree(mura_archive.root, root)
    for csv_file in (root / "MURA-v1.1").glob("*.csv"):
        csv_file.unlink()
    assert _read_back(root) == _truth(mura_archive)
    assert any("no MURA CSVs" in n for n in list_archive(root).notes)


def test_junk_is_skipped_and_counted_missing_files_reported(
    mura_archive: SynthArchive, tmp_path: Path
) -> None:
    root = tmp_path / "junky"
    shutil.copytree(mura_archive.root, root)
    first = next((root / "MURA-v1.1" / "train").rglob("image1.png"))
    (first.parent / "._image1.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (first.parent / ".DS_Store").write_bytes(b"Bud1")
    (root / "MURA-v1.1" / "train" / ".DS_Store").write_bytes(b"Bud1")
    (root / "MURA-v1.1" / "train" / "__MACOSX").mkdir()
    (root / "MURA-v1.1" / "train" / "__MACOSX" / "x.png").write_bytes(b"junk")
    missing = next((root / "MURA-v1.1" / "valid").rglob("*.png"))
    missing.unlink()
    listing = list_archive(root)
    assert listing.junk_skipped == 4
    assert len(listing.refs) == mura_archive.n_images - 1
    [problem] = listing.problems
    assert problem.error_type == "missing_file"
    assert "valid_image_paths.csv line" in problem.reason
    assert missing.relative_to(root / "MURA-v1.1").as_posix() in problem.path
    summary = format_summary(listing)
    assert "junk files skipped: 4" in summary and "missing_file" in summary


def test_a_stray_file_in_the_tree_is_a_problem_not_a_crash(
    mura_archive: SynthArchive, tmp_path: Path
) -> None:
    root = tmp_path / "stray"
    shutil.copytree(mura_archive.root, root)
    study = next((root / "MURA-v1.1" / "train").rglob("study1_*"))
    (study / "notes.doc").write_text("x")
    (root / "MURA-v1.1" / "train" / "XR_WRIST" / "loose.png").write_bytes(b"x")
    reasons = {p.error_type for p in list_archive(root).problems}
    assert reasons == {"not_an_image", "unexpected_layout"}


def test_study_keys_are_unique_per_body_part_and_patient(mura_archive: SynthArchive) -> None:
    listing = list_archive(mura_archive.root)
    assert len(listing.studies()) == len(mura_archive.studies)
    for key, refs in listing.studies().items():
        assert key.count("/") == 3 and refs[0].patient_key.startswith("patient")
        assert all(isinstance(r.body_part, BodyPart) for r in refs)


def test_missing_and_empty_roots_fail_fast(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not found"):
        list_archive(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images found"):
        list_archive(tmp_path / "empty")
    with pytest.raises(SourceError, match="unknown source kind"):
        list_archive(tmp_path / "empty", kind="zip")


def test_a_header_line_in_the_csvs_is_accepted_and_said(
    mura_archive: SynthArchive, tmp_path: Path
) -> None:
    """Public copies of MURA add `Img_Path,Label` (or `Path,Label`) as a first line."""
    root = tmp_path / "copy"
    shutil.copytree(mura_archive.root, root)
    for name, header in (
        ("train_image_paths.csv", "Img_Path"),
        ("train_labeled_studies.csv", "Study_Path,Label"),
        ("valid_labeled_studies.csv", "\ufeffpath,label"),
    ):
        csv_path = root / "MURA-v1.1" / name
        csv_path.write_text(f"{header}\n{csv_path.read_text()}")
    listing = list_archive(root)
    assert listing.problems == ()
    assert _read_back(root) == _truth(mura_archive)
    used = next(n for n in listing.notes if n.startswith("CSVs used"))
    assert "train_image_paths.csv (header line 'Img_Path' skipped)" in used
    assert "train_labeled_studies.csv (header line 'Study_Path,Label' skipped)" in used
    assert "valid_labeled_studies.csv (header line 'path,label' skipped)" in used
    assert "valid_image_paths.csv," in used or used.endswith("valid_image_paths.csv")


def test_only_the_first_line_can_be_a_header(mura_archive: SynthArchive, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(mura_archive.root, root)
    csv_path = root / "MURA-v1.1" / "train_labeled_studies.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join([lines[0], "Study_Path,Label", *lines[1:]]) + "\n")
    listing = list_archive(root)
    assert [(p.error_type, p.reason) for p in listing.problems] == [
        (
            "bad_csv_row",
            "train_labeled_studies.csv line 2: expected 'study path,0|1', "
            "got ['Study_Path', 'Label']",
        )
    ]
