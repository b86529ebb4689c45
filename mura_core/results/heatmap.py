"""Heatmaps a viewer overlays: each Grad-CAM map of a flagged study as a DICOM object over its
source image (`build_heatmaps`).

The recipe, per scored view of a flagged study (an `ScPicture`: the source's listed header,
its map at the model's input size):

1. **the map at the source's geometry** (`map_at_source`): the model saw the image scaled
   and padded into a square (`mura_core.imaging.geometry.pad_box`, the one place of that
   rule); the map's part over the image is cropped and resized (bilinear, float32) to the
   source's Rows × Columns — the only full-size array made, 4 bytes a pixel;
2. **encoded** as `HeatmapFormat` asks, by highdicom, one segment "AI attention (Grad-CAM)"
   (recommended display colour `HEATMAP_RGB`): a BINARY Segmentation (`binary`, the
   default: the map >= `objects.HOT`), which OHIF 3.13 overlays, or a FRACTIONAL one
   (`fractional`: the probability 0–255 per pixel), which OHIF 3.13's loader refuses
   ("Fractional segmentations are not yet supported": it takes only 0/maximum). Not a
   Parametric Map: OHIF overlays one only on a reconstructable volume (its PMAP loader
   refuses stacks), and highdicom 0.28 cannot build one of a single-frame source without a
   Frame of Reference (its frame has no dimension index values for the dimension it
   declares);
3. **in a plane, referencing its source image** (`in_a_plane`): pixel-aligned with it (Rows
   × Columns equal; Derivation Image and Source Image Sequences with spatial locations
   preserved, Referenced Series Sequence), and with the plane OHIF's SEG loader needs to
   place a frame (Plane Orientation, Plane Position and Pixel Measures functional groups:
   without Pixel Measures its SEG viewport throws, without an orientation its loader does).
   A source in a patient coordinate system lends its own; a projection radiograph has none
   (the listing asks the PACS for none either), so the heatmap gets a Frame of Reference of
   its own, one per source image, in which the source's plane is the identity orientation
   at the origin — what OHIF assumes of an image without one — with nominal 1 mm pixels
   where the listing gives no spacing. highdicom maps one frame of a source: a multi-frame
   source is not mapped (`unmappable` says why; its Secondary Capture still shows it);
4. **one series per heatmap** (a viewer shows one overlay object per series), numbered as its
   image in the study, UIDs deterministic like the SR's (`result_uid` "heatmap-series" /
   "heatmap", index = the image's number): a re-run stores the same objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from PIL import Image

from mura_core.imaging.geometry import pad_box
from mura_core.results.content import (
    ALGORITHM_FAMILY,
    FINDING_TYPE,
    HEATMAP_CATEGORY,
    HEATMAP_LABEL,
    HEATMAP_SERIES_DESCRIPTION,
    HEATMAP_SERIES_NUMBER,
    RESULT_MANUFACTURER,
    ModelIdentity,
    ScPicture,
    StudyFinding,
)
from mura_core.results.equipment import ai_equipment, source_header
from mura_core.results.objects import HOT, HeatmapFormat
from mura_core.results.uids import device_uid, frame_of_reference_uid, result_uid

CONTENT_LABEL = "GRAD_CAM"
# The segment's recommended display colour: the hot end of a Grad-CAM colour map (a viewer
# without one picks its own, and OHIF says so in a notice)
HEATMAP_RGB = (255, 64, 0)
# The plane of a source without one: rows along +x, columns along +y, the first pixel at the
# origin — what OHIF (and Cornerstone) assume for an image without Image Orientation/Position
SOURCE_PLANE_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SOURCE_PLANE_POSITION = (0.0, 0.0, 0.0)
# mm, where the listed header gives none: a radiograph's listing has no spacing, and
# highdicom reads a Pixel Measures item back only with both Pixel Spacing and Slice Thickness
NOMINAL_PIXEL_SPACING = (1.0, 1.0)
NOMINAL_SLICE_THICKNESS = 1.0
_PLANE = ("FrameOfReferenceUID", "ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing")


def unmappable(source: pydicom.Dataset) -> str | None:
    """Why a source image gets no heatmap (None: it gets one)."""
    if not source.get("Rows") or not source.get("Columns"):
        return "its listed header has no Rows/Columns"
    if int(source.get("NumberOfFrames") or 1) > 1:
        return "multi-frame (highdicom maps one frame of a source without a frame of reference)"
    return None


def map_at_source(cam: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """The map (S, S) of a `columns`×`rows` image padded into a square, as float32
    (rows, columns) in [0, 1] over the image itself."""
    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim != 2 or cam.shape[0] != cam.shape[1]:
        raise ValueError(f"the map must be a square 2-D array, got shape {cam.shape}")
    left, top, width, height = pad_box(columns, rows, cam.shape[0])
    crop = np.ascontiguousarray(cam[top : top + height, left : left + width])
    resized = Image.fromarray(crop).resize((columns, rows), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def in_a_plane(header: pydicom.Dataset) -> pydicom.Dataset:
    """The source header highdicom builds a heatmap from, placed in a plane: as it is when
    it has one (Frame of Reference, Image Orientation and Position (Patient), Pixel
    Spacing); else (a projection radiograph) in a plane defined for it: a Frame of Reference
    of its own (`frame_of_reference_uid`), `SOURCE_PLANE_ORIENTATION` at
    `SOURCE_PLANE_POSITION`, its Pixel Spacing (else Imager Pixel Spacing, else nominal).
    highdicom writes them into the Segmentation (Frame of Reference module, Plane
    Orientation, Plane Position and Pixel Measures functional groups) and finds the source
    pixel-aligned with it (Derivation Image Sequence, spatial locations preserved): what
    OHIF's SEG loader needs to place the map on its image. `header` is a copy (source_header):
    input to highdicom, like the Type 2 attributes source_header adds."""
    header.SliceThickness = header.get("SliceThickness") or NOMINAL_SLICE_THICKNESS
    if all(keyword in header for keyword in _PLANE):
        return header
    spacing = header.get("PixelSpacing") or header.get("ImagerPixelSpacing")
    header.FrameOfReferenceUID = frame_of_reference_uid(str(header.SOPInstanceUID))
    header.ImageOrientationPatient = list(SOURCE_PLANE_ORIENTATION)
    header.ImagePositionPatient = list(SOURCE_PLANE_POSITION)
    header.PixelSpacing = list(spacing or NOMINAL_PIXEL_SPACING)
    return header


def _algorithm(model: ModelIdentity) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name=model.name,
        family=ALGORITHM_FAMILY,
        version=model.software_version,
        source=RESULT_MANUFACTURER,
        parameters={"mlflow_model_uri": model.uri},
    )


def _segmentation(
    header: pydicom.Dataset, heat: np.ndarray, binary: bool, model: ModelIdentity, **common: Any
) -> hd.seg.Segmentation:
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=HEATMAP_LABEL,
        segmented_property_category=HEATMAP_CATEGORY,
        segmented_property_type=FINDING_TYPE,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=_algorithm(model),
        display_color=hd.color.CIELabColor.from_rgb(*HEATMAP_RGB),
    )
    return hd.seg.Segmentation(
        source_images=[header],
        pixel_array=(heat >= HOT).astype(np.uint8) if binary else heat,
        segmentation_type=(
            hd.seg.SegmentationTypeValues.BINARY
            if binary
            else hd.seg.SegmentationTypeValues.FRACTIONAL
        ),
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
        segment_descriptions=[segment],
        omit_empty_frames=False,  # a map with no hot region is still the view's heatmap
        **common,
    )


def _heatmap(
    picture: ScPicture,
    model: ModelIdentity,
    fmt: HeatmapFormat,
    number: int,
    uid: partial[str],
) -> hd.seg.Segmentation:
    header = in_a_plane(source_header(picture.source))
    heat = map_at_source(picture.cam, int(header.Rows), int(header.Columns))
    common: dict[str, Any] = dict(
        series_instance_uid=uid("heatmap-series", number),
        series_number=HEATMAP_SERIES_NUMBER,
        sop_instance_uid=uid("heatmap", number),
        instance_number=number,
        manufacturer=RESULT_MANUFACTURER,
        manufacturer_model_name=model.name,
        software_versions=model.software_version,
        device_serial_number=device_uid(model),
        content_label=CONTENT_LABEL,
        content_description=(
            f"AI attention (Grad-CAM), p(abnormal) = {picture.probability:.3f}; not for diagnosis"
        ),
        contributing_equipment=[ai_equipment(model)],
        series_description=HEATMAP_SERIES_DESCRIPTION,
    )
    return _segmentation(header, heat, fmt is HeatmapFormat.BINARY, model, **common)


def build_heatmaps(
    finding: StudyFinding,
    model: ModelIdentity,
    pictures: Sequence[ScPicture],
    fmt: HeatmapFormat = HeatmapFormat.BINARY,
) -> list[hd.seg.Segmentation]:
    """One heatmap per picture of a flagged study whose source can be mapped (`unmappable`),
    numbered as its image in the study (`finding.images` order)."""
    if not finding.flagged:
        raise ValueError(f"study {finding.study_uid} is not flagged: no heatmap")
    numbers = finding.image_numbers()
    uid = partial(result_uid, finding.study_uid, finding.instance_set, model.key)
    maps = []
    for picture in pictures:
        key = (str(picture.source.SOPInstanceUID), picture.frame)
        if key not in numbers:
            raise ValueError(f"picture of {key[0]} frame {key[1]}: not a scored image")
        if unmappable(picture.source) is None:
            maps.append(_heatmap(picture, model, fmt, numbers[key], uid))
    return maps
