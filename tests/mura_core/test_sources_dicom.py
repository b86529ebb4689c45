"""The DICOM-tree source: headers only, any depth, body parts from tags or keywords."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from mura_core import imaging
from mura_core.archive import SourceError, detect_kind, list_archive
from mura_core.body_parts import BodyPart
from mura_core.synth import SynthArchive, accession_number, study_uid


def test_synthetic_tree_lists_studies_patients_parts_and_labels(
    dicom_archive: SynthArchive,
) -> None:
    root = dicom_archive.root
    assert detect_kind(root) == "dicom"
    listing = list_archive(root)
    assert listing.problems == () and len(listing.refs) == dicom_archive.n_images
    studies = listing.studies()
    assert len(studies) == len(dicom_archive.studies)
    for plan in dicom_archive.studies:
        refs = studies[study_uid(dicom_archive.config, plan)]
        assert len(refs) == len(plan.views)
        assert {r.body_part for r in refs} == {plan.body_part}
        assert {r.label for r in refs} == {plan.label}
        assert all(r.patient_key.startswith("MRN") for r in refs)
        assert all(r.view in ("PA", "LL", "OBL", "AP") for r in refs)
    # each study's AccessionNumber, for matching radiologists' reads later
    assert listing.accessions == {
        study_uid(dicom_archive.config, p): accession_number(dicom_archive.config, p)
        for p in dicom_archive.studies
    }


def test_body_part_falls_back_to_descriptions(dicom_archive: SynthArchive) -> None:
    """The synthesizer leaves BodyPartExamined empty in one study of four."""
    listing = list_archive(dicom_archive.root)
    empties = [
        r
        for r in listing.refs
        if not pydicom.dcmread(r.location.path, stop_before_pixels=True).BodyPartExamined
    ]
    assert empties, "the fixture should contain studies without BodyPartExamined"
    assert all(r.body_part is not BodyPart.OTHER for r in empties)


def test_headers_only_while_listing(dicom_archive: SynthArchive, tmp_path: Path) -> None:
    """Listing stops before the pixel data: a file whose pixel data is cut off half-way
    still lists (from its header) and is refused only when decoded."""
    root = tmp_path / "tree"
    shutil.copytree(dicom_archive.root, root)
    victim = next(Path(r.location.path) for r in list_archive(root).refs if r.frame == 0)
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - len(pydicom.dcmread(victim).PixelData) // 2])
    listing = list_archive(root)
    assert str(victim) in {r.location.path for r in listing.refs}
    with pytest.raises(imaging.ImagingError):
        imaging.decode(victim)


def test_real_tree_any_depth_with_junk_and_problems(shared_dicom: Path, tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "a" / "b" / "c").mkdir(parents=True)
    shutil.copy(shared_dicom / "RG3_RLE.dcm", root / "a" / "b" / "c" / "IMG1")  # no suffix
    shutil.copy(shared_dicom / "RG2_J2KI.dcm", root / "a" / "rg2.dcm")
    shutil.copy(get_testdata_file("rtplan.dcm"), root / "a" / "plan.dcm")
    (root / "a" / "b" / "README.txt").write_text("export notes")
    (root / "a" / "._rg2.dcm").write_bytes(b"fork")
    (root / "a" / "garbage.bin").write_bytes(b"\x00" * 300)
    (root / "a" / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 40)
    listing = list_archive(root)
    assert listing.kind == "dicom"
    assert listing.junk_skipped == 2
    by_name = {Path(r.location.path).name: r for r in listing.refs}
    assert set(by_name) == {"IMG1", "rg2.dcm", "plan.dcm"}  # plan is refused by imaging later
    assert by_name["IMG1"].body_part == "extremity"  # its own name: it names no MURA part
    assert by_name["rg2.dcm"].body_part == "hip"  # BodyPartExamined HIP: its own row
    assert by_name["IMG1"].study_key != by_name["rg2.dcm"].study_key
    errors = {Path(p.path).name: p.error_type for p in listing.problems}
    assert errors["garbage.bin"] == "not_dicom"
    assert errors["broken.dcm"] in ("corrupt", "missing_study_uid")


def test_labels_csv_needs_a_study_column(dicom_archive: SynthArchive, tmp_path: Path) -> None:
    bad = tmp_path / "labels.csv"
    bad.write_text("patient,label\nx,1\n")
    with pytest.raises(SourceError, match="study_instance_uid"):
        list_archive(dicom_archive.root, labels=bad)
    with pytest.raises(SourceError, match="labels file not found"):
        list_archive(dicom_archive.root, labels=tmp_path / "none.csv")


def test_mixed_tree_asks_for_a_kind(dicom_archive: SynthArchive, tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    shutil.copytree(dicom_archive.root, root)
    (root / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(SourceError, match="--kind"):
        detect_kind(root)
    assert list_archive(root, kind="dicom").kind == "dicom"


def test_a_damaged_value_representation_is_a_problem_not_a_crash(
    dicom_archive: SynthArchive, tmp_path: Path
) -> None:
    """Found by fuzzing (tests/fuzz): a SOPInstanceUID whose VR reads 'U\\x00' parsed, then
    failed when listing read the value (pydicom converts values lazily)."""
    root = tmp_path / "tree"
    shutil.copytree(dicom_archive.root, root)
    victim = Path(list_archive(root).refs[0].location.path)
    data = bytearray(victim.read_bytes())
    at = data.index(b"\x08\x00\x18\x00UI") + 5  # (0008,0018) UI: the VR's second byte
    data[at] = 0
    victim.write_bytes(bytes(data))
    listing = list_archive(root)
    rel = victim.relative_to(root.resolve()).as_posix()
    assert [p.error_type for p in listing.problems if p.path == rel] == ["corrupt"]
