"""DICOM results beyond the SR: heatmaps (Segmentations over their source images), the Key
Object Selection of a flagged study, SR versions (which one a new SR supersedes, the history
`mura results` prints), and choosing what a write-back stores.

Sources are a synthetic DICOM archive (non-square DX images without a Frame of Reference,
as radiographs come); every object is written with dcmwrite and read back by highdicom
(`segread`, `KeyObjectSelectionDocument.from_dataset`, `srread`) before it is checked.
"""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import Comprehensive3DSRStorage, KeyObjectSelectionDocumentStorage

from mura_core import results as r
from mura_core.errors import ConfigError
from mura_core.imaging.geometry import pad_box
from mura_core.pacs.address import PacsError
from mura_core.pacs.client import RetryPolicy, connect
from mura_core.results.history import (
    ResultVersion,
    StoredResult,
    StudyHistory,
    earlier_srs,
    format_history,
    superseded,
)
from mura_core.synth import SynthConfig, synthesize

MODEL = r.ModelIdentity(name="mura-cnn", version="3", uri="models:/mura-cnn/3")
CAM_SIDE = 40


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[pydicom.Dataset]]:
    """The largest study of a 2-study synthetic DICOM archive: its UID and image headers."""
    built = synthesize(
        tmp_path_factory.mktemp("objects") / "dicom",
        SynthConfig(studies=2, format="dicom", size=128),
        workers=1,
    )
    rels = max(built.files.values(), key=len)
    headers = [pydicom.dcmread(built.root / rel, stop_before_pixels=True) for rel in rels]
    return str(headers[0].StudyInstanceUID), headers


def _finding(study_uid: str, headers: list[pydicom.Dataset], flagged: bool = True):
    prob = 0.8 if flagged else 0.2
    images = tuple(r.ImageFinding(h, prob) for h in headers)
    return r.StudyFinding(study_uid, prob, 0.5, flagged, images)


def _hot_corner(header: pydicom.Dataset) -> np.ndarray:
    """A square map (as the model sees the padded image) hot over the image's top-left
    quadrant only, 0 elsewhere (the padding included)."""
    left, top, width, height = pad_box(int(header.Columns), int(header.Rows), CAM_SIDE)
    cam = np.zeros((CAM_SIDE, CAM_SIDE), np.float32)
    cam[top : top + height // 2, left : left + width // 2] = 1.0
    return cam


def _pictures(headers: list[pydicom.Dataset]) -> list[r.ScPicture]:
    pixels = np.zeros((64, 64), np.uint8)  # a heatmap needs the map, not the pixels
    return [r.ScPicture(h, pixels, _hot_corner(h), 0.8) for h in headers]


def _round_trip(ds: pydicom.Dataset, path: Path) -> Path:
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def test_map_at_source_is_the_image_part_of_the_map_at_rows_by_columns() -> None:
    rows, columns = 300, 120  # a tall film: padded left and right in the model's square
    left, top, width, height = pad_box(columns, rows, CAM_SIDE)
    assert left > 0 and top == 0
    cam = np.zeros((CAM_SIDE, CAM_SIDE), np.float32)
    cam[:, left : left + width // 2] = 1.0  # the image's left half; the padding stays 0
    heat = r.map_at_source(cam, rows, columns)
    assert heat.shape == (rows, columns) and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    assert heat[:, : columns // 2 - 8].min() > 0.99  # the left half, away from the edge
    assert heat[:, columns // 2 + 8 :].max() < 0.01
    with pytest.raises(ValueError, match="square"):
        r.map_at_source(np.zeros((4, 5), np.float32), rows, columns)


def _in_a_plane_of_its_own(seg: hd.seg.Segmentation, header: pydicom.Dataset) -> None:
    """A heatmap of a source without a plane (a radiograph): a Frame of Reference of its own,
    one per source image, the identity orientation at the origin, nominal 1 mm pixels, and
    its one frame derived from the source with spatial locations preserved (what OHIF's SEG
    loader needs to overlay it; without Pixel Measures its SEG viewport throws)."""
    assert "FrameOfReferenceUID" not in header
    assert seg.FrameOfReferenceUID == r.frame_of_reference_uid(str(header.SOPInstanceUID))
    (shared,) = seg.SharedFunctionalGroupsSequence
    orientation = shared.PlaneOrientationSequence[0].ImageOrientationPatient
    assert [float(v) for v in orientation] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == [1.0, 1.0]
    (frame,) = seg.PerFrameFunctionalGroupsSequence
    position = frame.PlanePositionSequence[0].ImagePositionPatient
    assert [float(v) for v in position] == [0.0, 0.0, 0.0]
    (derivation,) = frame.DerivationImageSequence
    (source,) = derivation.SourceImageSequence
    assert source.ReferencedSOPInstanceUID == header.SOPInstanceUID
    assert source.SpatialLocationsPreserved == "YES"


def test_a_source_with_a_plane_keeps_it_in_its_heatmap(study) -> None:
    """A source in a patient coordinate system (a CT-like header): the heatmap is in its
    Frame of Reference, at its orientation, position and spacing."""
    study_uid, headers = study
    placed = deepcopy(headers[0])
    placed.FrameOfReferenceUID = "1.2.3.4.5"
    placed.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    placed.ImagePositionPatient = [10, -20, 30]
    placed.PixelSpacing = [0.25, 0.5]
    finding = _finding(study_uid, [placed])
    (seg,) = r.build_heatmaps(finding, MODEL, _pictures([placed]))
    assert seg.FrameOfReferenceUID == "1.2.3.4.5"
    (shared,) = seg.SharedFunctionalGroupsSequence
    orientation = shared.PlaneOrientationSequence[0].ImageOrientationPatient
    assert [float(v) for v in orientation] == [0, 1, 0, 0, 0, -1]
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == [0.25, 0.5]
    position = seg.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    assert [float(v) for v in position.ImagePositionPatient] == [10, -20, 30]


@pytest.mark.parametrize("fmt", list(r.HeatmapFormat))
def test_heatmaps_are_segmentations_over_their_source_images(
    study, tmp_path: Path, fmt: r.HeatmapFormat
) -> None:
    study_uid, headers = study
    finding = _finding(study_uid, headers)
    maps = r.build_heatmaps(finding, MODEL, _pictures(headers), fmt)
    assert len(maps) == len(headers)
    series = set()
    for number, (header, built) in enumerate(zip(headers, maps, strict=True), 1):
        seg = hd.seg.segread(_round_trip(built, tmp_path / f"seg{number}.dcm"))
        assert seg.SegmentationType == fmt.name
        assert (seg.Rows, seg.Columns) == (header.Rows, header.Columns)
        _in_a_plane_of_its_own(seg, header)
        assert seg.get_source_image_uids() == [
            (study_uid, str(header.SeriesInstanceUID), str(header.SOPInstanceUID))
        ]
        (ref_series,) = seg.ReferencedSeriesSequence
        assert ref_series.SeriesInstanceUID == header.SeriesInstanceUID
        assert seg.StudyInstanceUID == study_uid and seg.PatientID == header.PatientID
        assert seg.InstanceNumber == number and seg.SeriesNumber == r.HEATMAP_SERIES_NUMBER
        assert seg.SOPInstanceUID == r.result_uid(
            study_uid, finding.instance_set, MODEL.key, "heatmap", number
        )
        assert (seg.Manufacturer, seg.SoftwareVersions) == (r.RESULT_MANUFACTURER, "3")
        kind = r.own_result_kind(seg.Modality, seg.SOPClassUID, seg.SeriesDescription, None)
        assert kind == "heatmap"
        series.add(seg.SeriesInstanceUID)
        (segment,) = seg.SegmentSequence
        assert segment.SegmentLabel == "AI attention (Grad-CAM)"
        pixels = seg.pixel_array.astype(np.float64)
        if fmt is r.HeatmapFormat.FRACTIONAL:
            assert seg.MaximumFractionalValue == 255
            pixels /= 255.0
        rows, cols = pixels.shape
        assert pixels[: rows // 2 - 4, : cols // 2 - 4].min() > 0.99  # the hot quadrant
        assert pixels[rows // 2 + 4 :, :].max() < 0.01 and pixels[:, cols // 2 + 4 :].max() < 0.01
    assert len(series) == len(headers)  # one series each: a viewer shows one per series


def test_heatmaps_only_for_flagged_studies_and_mappable_sources(study) -> None:
    study_uid, headers = study
    with pytest.raises(ValueError, match="not flagged"):
        r.build_heatmaps(_finding(study_uid, headers, False), MODEL, _pictures(headers))
    multi = deepcopy(headers[0])
    multi.NumberOfFrames = 2
    assert "multi-frame" in (r.unmappable(multi) or "")
    bare = deepcopy(headers[0])
    del bare.Rows
    assert "Rows/Columns" in (r.unmappable(bare) or "")
    assert r.unmappable(headers[0]) is None
    finding = _finding(study_uid, [multi, *headers[1:]])
    maps = r.build_heatmaps(finding, MODEL, _pictures([multi, *headers[1:]]))
    assert [m.InstanceNumber for m in maps] == list(range(2, len(headers) + 1))
    again = r.build_heatmaps(finding, MODEL, _pictures([multi, *headers[1:]]))
    assert [m.SOPInstanceUID for m in again] == [m.SOPInstanceUID for m in maps]


def test_key_object_selection_names_the_flagged_views_and_the_sr(study, tmp_path: Path) -> None:
    study_uid, headers = study
    finding = _finding(study_uid, headers)
    sr = r.build_sr(finding, MODEL)
    path = _round_trip(r.build_kos(finding, MODEL, sr), tmp_path / "kos.dcm")
    back = pydicom.dcmread(path)
    assert back.SOPClassUID == KeyObjectSelectionDocumentStorage and back.Modality == "KO"
    title = back.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator) == ("113000", "DCM")  # Of Interest
    views = [str(h.SOPInstanceUID) for h in headers]
    assert r.key_objects(back) == (*views, str(sr.SOPInstanceUID))
    document = hd.ko.KeyObjectSelectionDocument.from_dataset(back)
    images = document.content.get_references(value_type=hd.sr.ValueTypeValues.IMAGE)
    assert [str(i.referenced_sop_instance_uid) for i in images] == views
    (composite,) = document.content.get_references(value_type=hd.sr.ValueTypeValues.COMPOSITE)
    assert composite.referenced_sop_class_uid == Comprehensive3DSRStorage
    for view in views:
        assert document.resolve_reference(view)[0] == study_uid
    (device,) = document.content.get_observer_contexts(observer_type=codes.DCM.Device)
    assert device.observer_identifying_attributes.uid == r.device_uid(MODEL)
    assert back.StudyInstanceUID == study_uid and back.PatientName == headers[0].PatientName
    assert back.SeriesNumber == r.KOS_SERIES_NUMBER
    assert back.SOPInstanceUID == r.result_uid(study_uid, finding.instance_set, MODEL.key, "kos")
    kind = r.own_result_kind(back.Modality, back.SOPClassUID, back.SeriesDescription, None)
    assert kind == "kos"
    alone = r.build_kos(finding, MODEL)  # without the SR: the views only
    assert r.key_objects(alone) == tuple(views)
    with pytest.raises(ValueError, match="not flagged"):
        r.build_kos(_finding(study_uid, headers, False), MODEL)


def test_an_sr_names_the_version_it_supersedes(study, tmp_path: Path) -> None:
    study_uid, headers = study
    first = r.build_sr(_finding(study_uid, headers), MODEL)
    assert "PredecessorDocumentsSequence" not in first
    assert r.predecessors(first) == ()
    fewer = r.StudyFinding(  # the study's instance set changed: a new version
        study_uid, 0.8, 0.5, True, _finding(study_uid, headers[:-1]).images
    )
    second = r.build_sr(fewer, MODEL, previous=[first])
    back = pydicom.dcmread(_round_trip(second, tmp_path / "sr2.dcm"))
    assert back.SOPInstanceUID != first.SOPInstanceUID
    assert r.predecessors(back) == (str(first.SOPInstanceUID),)
    (ref_study,) = back.PredecessorDocumentsSequence
    assert ref_study.StudyInstanceUID == study_uid
    assert ref_study.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
    content = r.read_sr(back)
    assert content.instance_set_digest == r.instance_set_digest(fewer.instance_set)
    assert content.instance_set_digest != r.read_sr(first).instance_set_digest
    uid = r.digest_result_uid(study_uid, content.instance_set_digest, MODEL.key, "sr")
    assert uid == back.SOPInstanceUID  # a version's UIDs, found again from its SR
    assert isinstance(hd.sr.srread(tmp_path / "sr2.dcm"), hd.sr.Comprehensive3DSR)


def test_write_back_objects_and_heatmap_format_parse_with_one_line_errors() -> None:
    assert r.ResultObjects.parse(None).names == r.OBJECT_NAMES
    chosen = r.ResultObjects.parse("sr, KOS")
    assert chosen.names == ("sr", "kos") and not chosen.pictures
    assert r.ResultObjects.parse("heatmap").pictures
    with pytest.raises(ConfigError, match="unknown 'pmap'; use one or more of sr,sc,heatmap,kos"):
        r.ResultObjects.parse("sr,pmap")
    with pytest.raises(ConfigError, match="nothing named"):
        r.ResultObjects.parse(" , ")
    assert r.HeatmapFormat.parse("Binary") is r.HeatmapFormat.BINARY
    assert r.HeatmapFormat.parse("fractional") is r.HeatmapFormat.FRACTIONAL
    with pytest.raises(ConfigError, match="use one of binary, fractional"):
        r.HeatmapFormat.parse("pmap")


@pytest.mark.parametrize(
    ("modality", "sop_class", "description", "manufacturer", "kind"),
    [
        ("SEG", "1.2.840.10008.5.1.4.1.1.66.4", r.HEATMAP_SERIES_DESCRIPTION, None, "heatmap"),
        ("SEG", None, None, r.RESULT_MANUFACTURER, "heatmap"),
        ("KO", "1.2.840.10008.5.1.4.1.1.88.59", None, r.RESULT_MANUFACTURER, "kos"),
        ("KO", None, r.KOS_SERIES_DESCRIPTION, None, "kos"),
        ("OT", None, r.HEATMAP_SERIES_DESCRIPTION, r.RESULT_MANUFACTURER, "heatmap"),
        ("OT", None, r.SC_SERIES_DESCRIPTION, r.RESULT_MANUFACTURER, "sc"),
        ("SR", None, None, r.RESULT_MANUFACTURER, "sr"),
        ("SEG", "1.2.840.10008.5.1.4.1.1.66.4", "a radiologist's SEG", "ACME", None),
        ("KO", None, "key images", "ACME", None),
    ],
)
def test_own_result_kind(modality, sop_class, description, manufacturer, kind) -> None:
    assert r.own_result_kind(modality, sop_class, description, manufacturer) == kind
    assert r.is_own_result(modality, sop_class, description, manufacturer) is (kind is not None)


def test_the_newest_other_sr_is_superseded_and_an_unreachable_pacs_is_said(study) -> None:
    study_uid, headers = study
    older = r.build_sr(_finding(study_uid, headers), MODEL)
    newer = r.build_sr(_finding(study_uid, headers[:-1]), MODEL)
    older.ContentDate, older.ContentTime = "20260101", "080000.000001"
    newer.ContentDate, newer.ContentTime = "20260102", "070000"
    stored = [StoredResult.of(ds) for ds in (older, newer)]
    assert all(s is not None and s.kind == "sr" for s in stored)
    assert stored[1] is not None and stored[1].made == "20260102070000"
    assert superseded(stored, "2.25.1") == stored[1]  # a third version supersedes the newest
    assert superseded(stored, str(newer.SOPInstanceUID)) == stored[0]  # itself excluded
    assert superseded([], "2.25.1") is None
    reference = stored[1].reference()
    assert (reference.SOPInstanceUID, reference.SeriesInstanceUID) == (
        newer.SOPInstanceUID,
        newer.SeriesInstanceUID,
    )
    assert StoredResult.of(headers[0]) is None  # a source image is not ours
    nowhere = connect("dicomweb+http://127.0.0.1:1/dicom-web", retry=RetryPolicy(attempts=1))
    (found,) = earlier_srs(nowhere, [study_uid, study_uid]).values()
    assert isinstance(found, PacsError) and "127.0.0.1:1" in str(found)


def test_format_history_lists_versions_newest_first(study) -> None:
    study_uid, headers = study
    content = r.read_sr(r.build_sr(_finding(study_uid, headers), MODEL))
    newest = ResultVersion("2.25.2", "20260102070000.5", content, ("2.25.1",), 2, 2, 1)
    oldest = ResultVersion("2.25.1", "20260101080000", content, (), None, None, None)
    history = StudyHistory(study_uid, (newest, oldest), (("2.25.9", "corrupt: x"),), ())
    text = format_history(history)
    assert text.splitlines()[0] == f"study {study_uid}: 2 result version(s), newest first ()"
    assert text.index("SR 2.25.2") < text.index("SR 2.25.1")
    assert "1. 2026-01-02 07:00:00  mura-cnn 3  ABNORMAL (flagged)  p = 0.800" in text
    assert "supersedes 2.25.1" in text and "supersedes nothing (first)" in text
    assert "objects: 2 Secondary Captures, 2 heatmaps, 1 key-object documents" in text
    assert "objects: ? Secondary Captures" in text and "SR 2.25.9: not read (corrupt: x)" in text
