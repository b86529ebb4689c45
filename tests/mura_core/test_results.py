"""DICOM results: the TID 1500 SR and the Secondary Captures, on real synthetic DICOM headers.

Sources are a synthetic DICOM archive (2 studies) and pydicom's bundled test files; every SR
and SC is written with dcmwrite and read back before it is checked.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import UID

from mura_core import results as r
from mura_core.cam import overlay
from mura_core.imaging import load_image
from mura_core.synth import SynthConfig, synthesize

MODEL = r.ModelIdentity(name="mura-cnn", version="3", uri="models:/mura-cnn/3")
SIZE = 128
UID_FORM = re.compile(r"^2\.25\.(0|[1-9][0-9]*)$")


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Study UID → its image files, from a 2-study synthetic DICOM archive."""
    built = synthesize(
        tmp_path_factory.mktemp("results") / "dicom",
        SynthConfig(studies=2, format="dicom", size=SIZE),
        workers=1,
    )
    studies: dict[str, list[Path]] = {}
    for rels in built.files.values():
        paths = [built.root / rel for rel in rels]
        uid = str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
        studies[uid] = paths
    return studies


def _largest(archive: dict[str, list[Path]]) -> tuple[str, list[pydicom.Dataset]]:
    uid = max(archive, key=lambda k: len(archive[k]))
    return uid, [pydicom.dcmread(p, stop_before_pixels=True) for p in archive[uid]]


def _finding(
    study_uid: str, headers: list[pydicom.Dataset], probs: list[float], threshold: float = 0.5
) -> r.StudyFinding:
    images = tuple(r.ImageFinding(h, p) for h, p in zip(headers, probs, strict=True))
    mean = float(np.mean(probs))
    return r.StudyFinding(study_uid, mean, threshold, mean > threshold, images)


def _round_trip(ds: pydicom.Dataset, path: Path) -> pydicom.Dataset:
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return pydicom.dcmread(path)


def _probs(n: int, high: bool) -> list[float]:
    # awkward floats (17 significant digits) prove the values come back bit for bit
    base = [0.7123456789012345, 0.9100000000000001, 0.6543210987654321, 0.8333333333333334]
    return [b if high else 1 - b for b in base[:n]]


@pytest.mark.parametrize("flagged", [True, False])
def test_sr_round_trips_through_a_file(
    archive: dict[str, list[Path]], tmp_path: Path, flagged: bool
) -> None:
    study_uid, headers = _largest(archive)
    assert len(headers) >= 2
    finding = _finding(study_uid, headers, _probs(len(headers), flagged))
    assert finding.flagged is flagged
    back = _round_trip(r.build_sr(finding, MODEL), tmp_path / "sr.dcm")

    content = r.read_sr(back)
    assert content.study_uid == study_uid
    assert content.probability == finding.probability
    assert content.threshold == 0.5 and content.flagged is flagged
    assert content.model == MODEL
    assert [i.sop_instance_uid for i in content.images] == [h.SOPInstanceUID for h in headers]
    assert [i.probability for i in content.images] == [i.probability for i in finding.images]
    assert all(i.frame == 0 for i in content.images)

    parsed = hd.sr.srread(tmp_path / "sr.dcm")  # highdicom's own reader agrees on the IOD
    assert isinstance(parsed, hd.sr.Comprehensive3DSR)
    assert isinstance(parsed.content, hd.sr.MeasurementReport)
    evidence = {sop for _, _, sop, _ in parsed.get_evidence(current_procedure_only=True)}
    assert evidence == {h.SOPInstanceUID for h in headers}


def test_sr_header_is_a_new_series_of_the_patients_study(
    archive: dict[str, list[Path]], tmp_path: Path
) -> None:
    study_uid, headers = _largest(archive)
    finding = _finding(study_uid, headers, _probs(len(headers), True))
    back = _round_trip(r.build_sr(finding, MODEL), tmp_path / "sr.dcm")
    source = headers[0]
    for keyword in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex"):
        assert back[keyword].value == source[keyword].value, keyword
    assert back.AccessionNumber == source.AccessionNumber
    assert back.StudyInstanceUID == study_uid
    assert back.SeriesInstanceUID not in {h.SeriesInstanceUID for h in headers}
    assert back.Modality == "SR" and back.SOPClassUID == pydicom.uid.Comprehensive3DSRStorage
    assert (back.VerificationFlag, back.CompletionFlag) == ("UNVERIFIED", "COMPLETE")
    assert back.SeriesDescription == r.SR_SERIES_DESCRIPTION
    assert back.SeriesNumber == r.SR_SERIES_NUMBER
    assert back.Manufacturer == r.RESULT_MANUFACTURER
    assert (back.ManufacturerModelName, back.SoftwareVersions) == ("mura-cnn", "3")
    ours = [e for e in back.ContributingEquipmentSequence if e.Manufacturer == "mura-screen"]
    assert len(ours) == 1
    item = ours[0]
    assert (item.ManufacturerModelName, item.SoftwareVersions) == ("mura-cnn", "3")
    assert item.DeviceUID == r.device_uid(MODEL)
    code = item.PurposeOfReferenceCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("Newcode1", "99IHE")
    instances = [h.SOPInstanceUID for h in headers]
    assert back.SeriesInstanceUID == r.result_uid(study_uid, instances, MODEL.key, "sr-series")
    assert back.SOPInstanceUID == r.result_uid(study_uid, instances, MODEL.key, "sr")
    groups = hd.sr.Comprehensive3DSR.from_dataset(back).content.get_image_measurement_groups()
    assert len(groups) == 1 + len(headers)  # the study's, then one per image
    for group in groups:
        assert group.finding_type == r.FINDING_TYPE
        for measurement in group.get_measurements():
            assert measurement.unit == r.UNIT_ONE and measurement.name in (
                r.PROBABILITY,
                r.THRESHOLD,
            )
    (study,) = [g for g in groups if g.tracking_identifier == r.STUDY_TRACKING_ID]
    assert [e.value for e in study.get_qualitative_evaluations(name=r.NORMALITY)] == [r.ABNORMAL]
    assert {s.referenced_sop_instance_uid for s in study.source_images} == set(instances)


def _scoords(group: hd.sr.MeasurementsAndQualitativeEvaluations) -> list[tuple[str, str, list]]:
    """(graphic type, referenced SOP instance, (column, row) points) of every SCOORD in it."""
    found = hd.sr.utils.find_content_items(group[0], value_type="SCOORD", recursive=True)
    return [
        (
            item.GraphicType,
            item.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID,
            np.reshape(item.GraphicData, (-1, 2)).tolist(),
        )
        for item in found
    ]


@pytest.mark.parametrize("flagged", [True, False])
def test_every_sr_group_has_an_image_region_and_the_study_its_words(
    archive: dict[str, list[Path]], tmp_path: Path, flagged: bool
) -> None:
    """What OHIF v3 needs to show the SR (docs/pacs.md#seen-in-ohif): a 2-D SCOORD on a
    referenced image in every measurement group (without one its SR viewport stays black),
    the study group's around each whole image (a closed POLYLINE: its text box), each image
    group's at its image's corners (MULTIPOINT: no second text box over the first image),
    and the finding and model in words, a Comment (DCM 121106) of the study group."""
    study_uid, headers = _largest(archive)
    finding = _finding(study_uid, headers, _probs(len(headers), flagged))
    back = _round_trip(r.build_sr(finding, MODEL), tmp_path / "sr.dcm")
    groups = hd.sr.Comprehensive3DSR.from_dataset(back).content.get_image_measurement_groups()
    study, *images = groups
    assert study.tracking_identifier == r.STUDY_TRACKING_ID

    def corners(h: pydicom.Dataset) -> list[list[float]]:
        return [[0, 0], [h.Columns, 0], [h.Columns, h.Rows], [0, h.Rows]]

    closed = [("POLYLINE", h.SOPInstanceUID, corners(h) + [[0, 0]]) for h in headers]
    assert _scoords(study) == closed
    for group, header in zip(images, headers, strict=True):
        assert _scoords(group) == [("MULTIPOINT", header.SOPInstanceUID, corners(header))]
    words = hd.sr.utils.find_content_items(study[0], name=r.COMMENT)
    finding_word = "Abnormal" if flagged else "Normal"
    assert [w.TextValue for w in words] == [f"{finding_word} (AI: mura-cnn v3)"]
    assert r.read_sr(back).flagged is flagged  # the reader is not confused by either


def test_sr_of_an_unregistered_model_says_so_and_reads_back_none(
    archive: dict[str, list[Path]], tmp_path: Path
) -> None:
    model = r.ModelIdentity(name="bundle", version=None, uri="file:///models/bundle")
    study_uid, headers = _largest(archive)
    finding = _finding(study_uid, headers, _probs(len(headers), True))
    back = _round_trip(r.build_sr(finding, model), tmp_path / "sr.dcm")
    assert back.SoftwareVersions == r.UNREGISTERED
    assert r.read_sr(back).model == model
    registered = r.build_sr(finding, MODEL)
    assert back.SOPInstanceUID != registered.SOPInstanceUID


def test_sr_references_frames_of_a_multiframe_source_and_tolerates_missing_type2(
    tmp_path: Path,
) -> None:
    multi = pydicom.dcmread(get_testdata_file("examples_ybr_color.dcm"), stop_before_pixels=True)
    assert int(multi.NumberOfFrames) > 5
    del multi.AccessionNumber  # a Type 2 attribute some archives drop
    images = (r.ImageFinding(multi, 0.2, frame=0), r.ImageFinding(multi, 0.8, frame=4))
    finding = r.StudyFinding(str(multi.StudyInstanceUID), 0.5, 0.5, False, images)
    back = _round_trip(r.build_sr(finding, MODEL), tmp_path / "sr.dcm")
    content = r.read_sr(back)
    assert [(i.sop_instance_uid, i.frame, i.probability) for i in content.images] == [
        (multi.SOPInstanceUID, 0, 0.2),
        (multi.SOPInstanceUID, 4, 0.8),
    ]
    assert back.PatientID == multi.PatientID and back.AccessionNumber in ("", None)
    assert "AccessionNumber" not in multi  # the caller's header is left as it was

    past_end = r.ImageFinding(multi, 0.5, frame=int(multi.NumberOfFrames))
    with pytest.raises(ValueError, match="frame"):
        r.build_sr(r.StudyFinding(str(multi.StudyInstanceUID), 0.5, 0.5, False, (past_end,)), MODEL)
    single = pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    framed = r.ImageFinding(single, 0.5, frame=1)
    with pytest.raises(ValueError, match="single-frame"):
        r.build_sr(r.StudyFinding(str(single.StudyInstanceUID), 0.5, 0.5, False, (framed,)), MODEL)


def test_result_uids_are_deterministic_valid_and_distinct() -> None:
    study, instances = "1.2.3.4", ["1.2.3.4.1", "1.2.3.4.2", "1.2.3.4.3"]
    uid = r.result_uid(study, instances, "3", "sr")
    assert uid == r.result_uid(study, list(reversed(instances)), "3", "sr")
    assert uid == r.result_uid(study, instances + instances[:1], "3", "sr")  # a set
    variants = {
        uid,
        r.result_uid(study, instances, "4", "sr"),
        r.result_uid(study, instances, None, "sr"),
        r.result_uid(study, instances[:2], "3", "sr"),
        r.result_uid(study, instances + ["1.2.3.4.9"], "3", "sr"),
        r.result_uid("1.2.3.5", instances, "3", "sr"),
        r.result_uid(study, instances, "3", "sr-series"),
        r.result_uid(study, instances, "3", "sc-series"),
        r.result_uid(study, instances, "3", "sc", 1),
        r.result_uid(study, instances, "3", "sc", 2),
        r.device_uid(MODEL),
        r.device_uid(r.ModelIdentity("mura-cnn", "4", "models:/mura-cnn/4")),
    }
    assert len(variants) == 12
    for value in variants:
        assert len(value) <= 64 and UID_FORM.match(value) and UID(value).is_valid, value
        assert uuid.UUID(int=int(value.removeprefix("2.25."))).version == 8
    with pytest.raises(ValueError, match="kind"):
        r.result_uid(study, instances, "3", "seg")

    digest = r.instance_set_digest(instances)
    assert digest == r.instance_set_digest(reversed(instances + instances))
    assert digest != r.instance_set_digest(instances[:2])
    assert re.fullmatch(r"[0-9a-f]{64}", digest)


def test_rebuilding_gives_the_same_uids_and_a_changed_input_new_ones(
    archive: dict[str, list[Path]],
) -> None:
    study_uid, headers = _largest(archive)
    probs = _probs(len(headers), True)
    first = r.build_sr(_finding(study_uid, headers, probs), MODEL)
    again = r.build_sr(_finding(study_uid, headers, probs), MODEL)
    assert (first.SeriesInstanceUID, first.SOPInstanceUID) == (
        again.SeriesInstanceUID,
        again.SOPInstanceUID,
    )
    newer = r.build_sr(
        _finding(study_uid, headers, probs), r.ModelIdentity("mura-cnn", "4", "models:/mura-cnn/4")
    )
    fewer = r.build_sr(_finding(study_uid, headers[:-1], probs[:-1]), MODEL)
    uids = {first.SOPInstanceUID, newer.SOPInstanceUID, fewer.SOPInstanceUID}
    series = {first.SeriesInstanceUID, newer.SeriesInstanceUID, fewer.SeriesInstanceUID}
    assert len(uids) == 3 and len(series) == 3
    # the listed instance set, when given, is what the UIDs hash (quarantined images count)
    listed = (*[h.SOPInstanceUID for h in headers], "1.2.3.999")
    full = _finding(study_uid, headers[:-1], probs[:-1])
    full = dataclasses.replace(full, instance_uids=listed)
    assert r.build_sr(full, MODEL).SOPInstanceUID == r.result_uid(
        study_uid, listed, MODEL.key, "sr"
    )


def test_study_finding_refuses_inconsistent_input(archive: dict[str, list[Path]]) -> None:
    study_uid, headers = _largest(archive)
    image = r.ImageFinding(headers[0], 0.9)
    with pytest.raises(ValueError, match="flagged"):
        r.StudyFinding(study_uid, 0.9, 0.5, False, (image,))
    with pytest.raises(ValueError, match="no scored image"):
        r.StudyFinding(study_uid, 0.9, 0.5, True, ())
    with pytest.raises(ValueError, match="not in study"):
        r.StudyFinding("1.2.3", 0.9, 0.5, True, (image,))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        r.ImageFinding(headers[0], 1.5)


def _blob(size: int, y: float, x: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * (size / 6) ** 2))


def _pictures(paths: list[Path], finding: r.StudyFinding) -> list[r.ScPicture]:
    return [
        r.ScPicture(image.source, load_image(path, size=SIZE), _blob(16, 5, 10), image.probability)
        for path, image in zip(paths, finding.images, strict=True)
    ]


def test_secondary_captures_show_original_beside_overlay_with_a_banner(
    archive: dict[str, list[Path]], tmp_path: Path
) -> None:
    study_uid, headers = _largest(archive)
    finding = _finding(study_uid, headers, _probs(len(headers), True))
    pictures = _pictures(archive[study_uid], finding)
    captures = r.build_secondary_captures(finding, MODEL, pictures)
    assert len(captures) == len(pictures)
    instances = [h.SOPInstanceUID for h in headers]
    for number, (capture, picture) in enumerate(zip(captures, pictures, strict=True), 1):
        back = _round_trip(capture, tmp_path / f"sc{number}.dcm")
        rgb = back.pixel_array
        band = rgb.shape[0] - SIZE
        assert rgb.shape == (SIZE + band, 2 * SIZE, 3) and 16 <= band <= SIZE // 4
        assert np.array_equal(rgb[band:, :SIZE], np.repeat(picture.pixels[..., None], 3, axis=2))
        assert np.array_equal(rgb[band:, SIZE:], overlay(picture.pixels, picture.cam))
        banner = rgb[:band].reshape(-1, 3)
        assert (banner == (0, 0, 0)).all(axis=1).mean() > 0.5  # dark strip
        assert ((banner[:, 0] > 200) & (banner[:, 2] < 80)).sum() > 50  # with yellow text
        assert back.BurnedInAnnotation == "YES"
        assert back.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
        assert back.StudyInstanceUID == study_uid and back.PatientID == headers[0].PatientID
        assert back.SeriesDescription == r.SC_SERIES_DESCRIPTION
        assert back.Manufacturer == r.RESULT_MANUFACTURER and back.SeriesNumber == 9902
        assert back.InstanceNumber == number
        assert back.SeriesInstanceUID == r.result_uid(study_uid, instances, MODEL.key, "sc-series")
        assert back.SOPInstanceUID == r.result_uid(study_uid, instances, MODEL.key, "sc", number)
        assert back.SourceImageSequence[0].ReferencedSOPInstanceUID == instances[number - 1]
    again = r.build_secondary_captures(finding, MODEL, pictures[::-1])
    assert sorted(c.SOPInstanceUID for c in again) == sorted(c.SOPInstanceUID for c in captures)


def test_secondary_captures_only_for_flagged_studies_and_their_images(
    archive: dict[str, list[Path]],
) -> None:
    study_uid, headers = _largest(archive)
    calm = _finding(study_uid, headers, _probs(len(headers), False))
    with pytest.raises(ValueError, match="not flagged"):
        r.build_secondary_captures(calm, MODEL, _pictures(archive[study_uid], calm))
    flagged = _finding(study_uid, headers[:1], _probs(1, True))
    pictures = _pictures(
        archive[study_uid], _finding(study_uid, headers, _probs(len(headers), True))
    )
    with pytest.raises(ValueError, match="not a scored image"):
        r.build_secondary_captures(flagged, MODEL, pictures[1:2])
    with pytest.raises(ValueError, match="twice"):
        r.build_secondary_captures(flagged, MODEL, pictures[:1] * 2)


def test_banner_font_draws_the_em_dash() -> None:
    font = r.banner_font(20)
    missing = np.asarray(font.getmask("\u0378"))  # an unassigned code point: the "tofu" box
    assert np.asarray(font.getmask("—")).tobytes() != missing.tobytes()
    assert "—" in r.BANNER_TEXT


def test_is_own_result_tells_our_objects_from_the_study_images(
    archive: dict[str, list[Path]],
) -> None:
    study_uid, headers = _largest(archive)
    finding = _finding(study_uid, headers, _probs(len(headers), True))
    sr = r.build_sr(finding, MODEL)
    (sc, *_) = r.build_secondary_captures(finding, MODEL, _pictures(archive[study_uid], finding))

    def listed(ds: pydicom.Dataset) -> bool:
        return r.is_own_result(
            ds.get("Modality"),
            ds.get("SOPClassUID"),
            ds.get("SeriesDescription"),
            ds.get("Manufacturer"),
        )

    assert listed(sr) and listed(sc)
    assert not any(listed(h) for h in headers)
    foreign_sc = pydicom.dcmread(get_testdata_file("SC_rgb.dcm"), stop_before_pixels=True)
    assert not listed(foreign_sc)
    assert not r.is_own_result("SR", pydicom.uid.ComprehensiveSRStorage, "CAD report", "Acme")
    # listings without a SOP class (series level) go by modality
    assert r.is_own_result("SR", None, r.SR_SERIES_DESCRIPTION, None)
    assert r.is_own_result("OT", None, None, r.RESULT_MANUFACTURER)
    assert not r.is_own_result("DX", None, r.SR_SERIES_DESCRIPTION, r.RESULT_MANUFACTURER)


def test_read_sr_refuses_what_is_not_ours(tmp_path: Path) -> None:
    with pytest.raises(r.ResultReadError, match="Comprehensive 3D SR"):
        r.read_sr(pydicom.dcmread(get_testdata_file("CT_small.dcm")))
    with pytest.raises(r.ResultReadError):
        r.read_sr(pydicom.dcmread(get_testdata_file("test-SR.dcm")))
