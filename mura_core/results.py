"""DICOM results for the PACS: a TID 1500 SR per study, Secondary Captures for flagged ones.

The recipe, top to bottom:

1. **UIDs.** Every object's UID is `2.25.` + a UUID (RFC 9562 version 8) made of the first
   128 bits of sha256 over (source study UID, digest of its instance set, model version,
   object kind, index): a re-run or a retried upload makes the same objects, so the PACS
   keeps one of each, while a new model version or a changed instance set makes new ones.
   `instance_set_digest` (sorted unique SOP Instance UIDs) is also what nightly compares to
   see a changed study. The model's Device UID is made the same way from name + version.
2. **The SR** (`build_sr`): highdicom's Comprehensive 3D SR holding a TID 1500 Measurement
   Report (the IOD and template IHE AI Results prescribes). Observation context: the model as
   a device observer. Procedure reported: plain radiography. One TID 1501 group for the
   study: the finding as a qualitative evaluation (Normality = Abnormal when flagged, Normal
   otherwise), the study probability and the threshold as numeric measurements in UCUM "1"
   (dimensionless), the algorithm identification (TID 4019: model name, registered version,
   the MLflow model URI as a parameter) and every source image. Then one group per image
   with its probability, referencing its SOP instance (and frame, when multi-frame). The
   patient and study modules come from the source headers through highdicom's evidence
   handling; the SR is a new series (9901) of the same study, VerificationFlag UNVERIFIED,
   CompletionFlag COMPLETE, PreliminaryFlag PRELIMINARY (nobody has read it yet), with the
   IHE AI Results contributing-equipment item that names the model.
3. **The Secondary Captures** (`build_secondary_captures`, flagged studies only): for each
   scored view an RGB canvas, a banner "AI — not for diagnosis" with the image probability
   and the model over the original beside its Grad-CAM overlay (`mura_core.cam.overlay`),
   stored as a highdicom SCImage in its own series (9902) of the same study, burned-in
   annotation YES.
4. **Reading back** (`read_sr`): highdicom parses the SR; the study group and the image
   groups give back the numbers, the model identity and the referenced instances. Values are
   stored as FD beside the DS, so floats round-trip bit for bit.
5. **Recognising our own objects** in a PACS listing (`is_own_result`): an SR or SC SOP
   class (or modality) plus our series description or manufacturer, so that they never
   count in a study's instance set.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from copy import deepcopy
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import highdicom as hd
import matplotlib
import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.sr.codedict import codes
from pydicom.uid import (
    BasicTextSRStorage,
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    EnhancedSRStorage,
    ExtensibleSRStorage,
    SecondaryCaptureImageStorage,
)

from .cam import overlay
from .errors import MuraError

RESULT_MANUFACTURER = "mura-screen"
SR_SERIES_DESCRIPTION = "mura-screen AI findings (SR)"
SC_SERIES_DESCRIPTION = "mura-screen AI overlays (SC), not for diagnosis"
SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902
UNREGISTERED = "unregistered"  # the software version of a model bundle with no registry version
BANNER_TEXT = "AI — not for diagnosis"
MODEL_URI_PARAMETER = "mlflow_model_uri="  # prefix of the TID 4019 parameter holding the URI
STUDY_TRACKING_ID = "mura-screen study finding"
IMAGE_TRACKING_ID = "mura-screen image {number}"
RESULT_KINDS = ("sr-series", "sr", "sr-tracking", "sc-series", "sc")

# Coded concepts (all from pydicom's dictionary of the DICOM standard, except the IHE one).
PROBABILITY = codes.DCM.Probability  # (122157, DCM): image and study probability
THRESHOLD = codes.DCM.ThresholdValue  # (122411, DCM): the flagging threshold
UNIT_ONE = codes.UCUM.NoUnits  # ("1", UCUM, "no units"): probabilities are dimensionless
NORMALITY = codes.DCM.Normality  # (121402, DCM): the study finding, valued from CID 222
ABNORMAL = codes.SCT.Abnormal  # (263654008, SCT): flagged (probability > threshold)
NORMAL = codes.SCT.Normal  # (17621005, SCT): not flagged
FINDING_TYPE = codes.NCIt.Abnormality  # (C9440, NCIt): what the probability is of
PROCEDURE_REPORTED = codes.SCT.PlainRadiography  # (168537006, SCT): the procedure analysed
ALGORITHM_FAMILY = codes.DCM.ArtificialIntelligence  # (123110, DCM)
# IHE RAD AI Results (AIR) Rev 1.1, 6.5.3.1: the purpose of reference of the algorithm's
# Contributing Equipment item (a trial-implementation code of the IHE scheme).
IHE_PROCESSING_ALGORITHM = hd.sr.CodedConcept("Newcode1", "99IHE", "Processing Algorithm")

_SR_CLASSES = frozenset(
    {
        BasicTextSRStorage,
        EnhancedSRStorage,
        ComprehensiveSRStorage,
        Comprehensive3DSRStorage,
        ExtensibleSRStorage,
    }
)
# Attributes highdicom reads from the first evidence header (Type 2: present, maybe empty).
_HEADER_TYPE2 = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "Modality",
)
# Pillow's built-in FreeType font (Aileron) has no "—" glyph (it draws the missing-glyph
# box); DejaVu Sans, shipped inside matplotlib, has it.
_FONT_PATH = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"
_BANNER_BACKGROUND = (0, 0, 0)
_BANNER_COLOUR = (255, 214, 0)


class ResultReadError(MuraError):
    """A dataset that is not one of mura-screen's SRs, or one that cannot be read back."""


def _check_probability(name: str, value: float) -> None:
    if not (isinstance(value, int | float | np.floating) and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


@dataclass(frozen=True)
class ModelIdentity:
    """The model that produced a result: registry name, version (None: unregistered), URI."""

    name: str
    version: str | None
    uri: str

    def __post_init__(self) -> None:
        if not self.name or not self.uri:
            raise ValueError("a model identity needs a name and a URI")
        if self.version is not None and not self.version:
            raise ValueError("model version must be None (unregistered) or a non-empty string")

    @property
    def software_version(self) -> str:
        """What SoftwareVersions and the algorithm version say: the registry version."""
        return self.version if self.version is not None else UNREGISTERED

    @property
    def key(self) -> str:
        """What result UIDs hash: name and version (two models' version 3 differ)."""
        return f"{self.name}/{self.software_version}"


@dataclass(frozen=True)
class ImageFinding:
    """One scored image: its source header (no pixels needed), probability, 0-based frame."""

    source: pydicom.Dataset
    probability: float
    frame: int = 0

    def __post_init__(self) -> None:
        _check_probability("image probability", self.probability)
        if self.frame < 0:
            raise ValueError(f"frame must be >= 0, got {self.frame}")


@dataclass(frozen=True)
class StudyFinding:
    """A screened study: probability (mean of images), threshold, flag, its scored images.

    `instance_uids` is the study's whole instance set as listed (scored or not, never our own
    results); the result UIDs hash it. None: the scored images' instances.
    """

    study_uid: str
    probability: float
    threshold: float
    flagged: bool
    images: tuple[ImageFinding, ...]
    instance_uids: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _check_probability("study probability", self.probability)
        _check_probability("threshold", self.threshold)
        if self.flagged != (self.probability > self.threshold):
            raise ValueError(
                f"flagged={self.flagged} contradicts probability {self.probability} "
                f"vs threshold {self.threshold} (flagged means probability > threshold)"
            )
        if not self.images:
            raise ValueError(f"study {self.study_uid} has no scored image to report")
        for image in self.images:
            if str(image.source.get("StudyInstanceUID", "")) != self.study_uid:
                raise ValueError(
                    f"image {image.source.get('SOPInstanceUID')} is not in study {self.study_uid}"
                )

    @property
    def instance_set(self) -> tuple[str, ...]:
        if self.instance_uids is not None:
            return self.instance_uids
        return tuple(str(image.source.SOPInstanceUID) for image in self.images)


@dataclass(frozen=True)
class ScPicture:
    """What a Secondary Capture shows: the model's input (uint8, bone bright) and its map."""

    source: pydicom.Dataset
    pixels: np.ndarray  # uint8 (H, W)
    cam: np.ndarray  # float in [0, 1], any size (resized to the pixels)
    probability: float
    frame: int = 0  # 0-based frame of a multi-frame source, as in ImageFinding

    def __post_init__(self) -> None:
        _check_probability("image probability", self.probability)


@dataclass(frozen=True)
class SrImage:
    """One image entry read back from an SR."""

    sop_instance_uid: str
    probability: float
    frame: int = 0  # 0-based; 0 also for a single-frame source


@dataclass(frozen=True)
class SrContent:
    """What one of our SRs says, read back."""

    study_uid: str
    probability: float
    threshold: float
    flagged: bool
    model: ModelIdentity
    images: tuple[SrImage, ...]


# --- UIDs -------------------------------------------------------------------------------


def _clean_uid(uid: object) -> str:
    return str(uid).strip("\0 ")


def instance_set_digest(instance_uids: Iterable[str]) -> str:
    """Order-independent hex digest of a study's instance set (duplicates count once)."""
    unique = sorted({_clean_uid(uid) for uid in instance_uids})
    return hashlib.sha256("\n".join(unique).encode("utf-8")).hexdigest()


def _hash_uid(*parts: str | int | None) -> str:
    """`2.25.` + the decimal of an RFC 9562 version-8 UUID built from sha256 of `parts`."""
    payload = json.dumps(parts, separators=(",", ":")).encode("utf-8")
    value = int.from_bytes(hashlib.sha256(payload).digest()[:16], "big")
    value = (value & ~(0xF << 76)) | (0x8 << 76)  # version 8 (custom, hash-based)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # the RFC variant
    return f"2.25.{value}"


def result_uid(
    study_uid: str,
    instance_uids: Iterable[str],
    model_version: str | None,
    kind: str,
    index: int = 0,
) -> str:
    """Deterministic UID of one result object (at most 44 characters).

    `kind` is one of RESULT_KINDS; `index` the image number within the study for "sc", the
    measurement group for "sr-tracking", 0 otherwise.
    """
    if kind not in RESULT_KINDS:
        raise ValueError(f"unknown result kind {kind!r}; expected one of {RESULT_KINDS}")
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    digest = instance_set_digest(instance_uids)
    study = _clean_uid(study_uid)
    return _hash_uid("mura-screen/result/v1", study, digest, model_version, kind, index)


def device_uid(model: ModelIdentity) -> str:
    """The model's Device UID (IHE AI Results): one per model name and version."""
    return _hash_uid("mura-screen/device/v1", model.name, model.version)


# --- shared pieces ----------------------------------------------------------------------


def _header(source: pydicom.Dataset) -> pydicom.Dataset:
    """A copy of the source header without pixel data. The Type 2 patient/study attributes
    highdicom reads are added empty where the source lacks them (input normalisation, not
    result content: highdicom copies the patient and study modules from this header)."""
    header = pydicom.Dataset()
    for element in source:
        if element.tag.group != 0x7FE0:  # pixel data of any kind
            header.add(deepcopy(element))
    for keyword in _HEADER_TYPE2:
        if keyword not in header:
            setattr(header, keyword, None)
    return header


def _frame_numbers(header: pydicom.Dataset, frame: int) -> list[int] | None:
    """The 1-based frame reference of a multi-frame source; None for a single-frame one."""
    n_frames = int(header.get("NumberOfFrames") or 1)
    if n_frames > 1:
        return [frame + 1]  # highdicom checks it against NumberOfFrames
    if frame != 0:
        raise ValueError(f"frame {frame} of single-frame image {header.SOPInstanceUID}")
    return None


def _ai_equipment(model: ModelIdentity) -> hd.ContributingEquipment:
    """The IHE AI Results Contributing Equipment item that names the model."""
    item = hd.ContributingEquipment(
        manufacturer=RESULT_MANUFACTURER,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=model.name,
        software_versions=model.software_version,
        contribution_description=f"AI model {model.uri}",
    )
    # highdicom's ContributingEquipment has no typed API for the two things IHE AIR asks of
    # this item: the Device UID, and the IHE purpose-of-reference code (highdicom accepts DCM
    # equipment codes only). Both are set here as attributes of the item.
    item.DeviceUID = device_uid(model)
    item.PurposeOfReferenceCodeSequence = [IHE_PROCESSING_ALGORITHM]
    return item


# --- the SR -----------------------------------------------------------------------------


def _algorithm(model: ModelIdentity) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=model.name,
        version=model.software_version,
        parameters=[MODEL_URI_PARAMETER + model.uri],
        family=ALGORITHM_FAMILY,
        manufacturer=RESULT_MANUFACTURER,
    )


def _group_source(image: ImageFinding, header: pydicom.Dataset) -> hd.sr.ImageContentItem:
    return hd.sr.SourceImageForMeasurementGroup.from_source_image(
        header, referenced_frame_numbers=_frame_numbers(header, image.frame)
    )


def _study_group(
    finding: StudyFinding, model: ModelIdentity, headers: Sequence[pydicom.Dataset], uid: str
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    value = ABNORMAL if finding.flagged else NORMAL
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uid, identifier=STUDY_TRACKING_ID),
        finding_type=FINDING_TYPE,
        algorithm_id=_algorithm(model),
        measurements=[
            hd.sr.Measurement(name=PROBABILITY, value=float(finding.probability), unit=UNIT_ONE),
            hd.sr.Measurement(name=THRESHOLD, value=float(finding.threshold), unit=UNIT_ONE),
        ],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=NORMALITY, value=value)],
        source_images=[_group_source(i, h) for i, h in zip(finding.images, headers, strict=True)],
    )


def _image_group(
    number: int, image: ImageFinding, header: pydicom.Dataset, model: ModelIdentity, uid: str
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    source = hd.sr.SourceImageForMeasurement.from_source_image(
        header, referenced_frame_numbers=_frame_numbers(header, image.frame)
    )
    probability = hd.sr.Measurement(
        name=PROBABILITY,
        value=float(image.probability),
        unit=UNIT_ONE,
        referenced_images=[source],
    )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=uid, identifier=IMAGE_TRACKING_ID.format(number=number)
        ),
        finding_type=FINDING_TYPE,
        algorithm_id=_algorithm(model),
        measurements=[probability],
        source_images=[_group_source(image, header)],
    )


def _observation_context(model: ModelIdentity) -> hd.sr.ObservationContext:
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=device_uid(model),
        name=model.name,
        manufacturer_name=RESULT_MANUFACTURER,
        model_name=model.name,
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )


def build_sr(finding: StudyFinding, model: ModelIdentity) -> hd.sr.Comprehensive3DSR:
    """The study's TID 1500 SR (a highdicom Comprehensive 3D SR), ready to store."""
    uid = partial(result_uid, finding.study_uid, finding.instance_set, model.key)
    headers = [_header(image.source) for image in finding.images]
    groups = [_study_group(finding, model, headers, uid("sr-tracking", 0))]
    for number, (image, header) in enumerate(zip(finding.images, headers, strict=True), 1):
        groups.append(_image_group(number, image, header, model, uid("sr-tracking", number)))
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(model),
        procedure_reported=PROCEDURE_REPORTED,
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=headers,
        content=report,
        series_instance_uid=uid("sr-series"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=uid("sr"),
        instance_number=1,
        manufacturer=RESULT_MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        contributing_equipment=[_ai_equipment(model)],
        series_description=SR_SERIES_DESCRIPTION,
        manufacturer_model_name=model.name,
        software_versions=model.software_version,
    )


# --- reading an SR back -----------------------------------------------------------------


def _one_value(group: hd.sr.MeasurementsAndQualitativeEvaluations, name: object) -> float:
    found = group.get_measurements(name=name)
    if len(found) != 1:
        raise ResultReadError(f"expected one {name.meaning} measurement, found {len(found)}")
    return float(found[0].value)


def _read_flag(group: hd.sr.MeasurementsAndQualitativeEvaluations) -> bool:
    found = group.get_qualitative_evaluations(name=NORMALITY)
    values = {ABNORMAL: True, NORMAL: False}
    if len(found) != 1 or found[0].value not in values:
        raise ResultReadError("the study finding has no Normality of Abnormal or Normal")
    return found[0].value == ABNORMAL


def _read_model(group: hd.sr.MeasurementsAndQualitativeEvaluations) -> ModelIdentity:
    def texts(name: object) -> list[str]:
        return [str(item.value) for item in hd.sr.utils.find_content_items(group[0], name=name)]

    names, versions = texts(codes.DCM.AlgorithmName), texts(codes.DCM.AlgorithmVersion)
    uris = [
        p.removeprefix(MODEL_URI_PARAMETER)
        for p in texts(codes.DCM.AlgorithmParameters)
        if p.startswith(MODEL_URI_PARAMETER)
    ]
    if len(names) != 1 or len(versions) != 1 or len(uris) != 1:
        raise ResultReadError("the study finding has no complete algorithm identification")
    version = None if versions[0] == UNREGISTERED else versions[0]
    return ModelIdentity(name=names[0], version=version, uri=uris[0])


def _read_image(group: hd.sr.MeasurementsAndQualitativeEvaluations) -> SrImage:
    found = group.get_measurements(name=PROBABILITY)
    if len(found) != 1 or len(found[0].referenced_images) != 1:
        raise ResultReadError(f"image group {group.tracking_identifier!r} is malformed")
    reference = found[0].referenced_images[0]
    frames = reference.referenced_frame_numbers
    return SrImage(
        sop_instance_uid=str(reference.referenced_sop_instance_uid),
        probability=float(found[0].value),
        frame=frames[0] - 1 if frames else 0,
    )


def read_sr(ds: pydicom.Dataset) -> SrContent:
    """Parse one of our SRs back with highdicom: the study finding, model, image entries."""
    if ds.get("SOPClassUID") != Comprehensive3DSRStorage:
        raise ResultReadError(f"not a Comprehensive 3D SR (SOP class {ds.get('SOPClassUID')})")
    report = hd.sr.Comprehensive3DSR.from_dataset(ds).content
    if not isinstance(report, hd.sr.MeasurementReport):
        raise ResultReadError("the SR content is not a TID 1500 Measurement Report")
    groups = report.get_image_measurement_groups()
    study = [g for g in groups if g.tracking_identifier == STUDY_TRACKING_ID]
    if len(study) != 1:
        raise ResultReadError("the SR has no mura-screen study finding")
    return SrContent(
        study_uid=str(ds.StudyInstanceUID),
        probability=_one_value(study[0], PROBABILITY),
        threshold=_one_value(study[0], THRESHOLD),
        flagged=_read_flag(study[0]),
        model=_read_model(study[0]),
        images=tuple(_read_image(g) for g in groups if g is not study[0]),
    )


# --- Secondary Captures -----------------------------------------------------------------


@lru_cache(maxsize=32)
def banner_font(size: int) -> ImageFont.FreeTypeFont:
    """The banner's font at `size` px (DejaVu Sans Bold: it has the em dash)."""
    return ImageFont.truetype(str(_FONT_PATH), size)


def _banner(width: int, height: int, texts: Sequence[str]) -> np.ndarray:
    """A (height, width, 3) strip with the first of `texts` (longest first) that fits at a
    readable size; the last one shrinks down to 6 px (and is clipped below that)."""
    image = Image.new("RGB", (width, height), _BANNER_BACKGROUND)
    draw = ImageDraw.Draw(image)
    pad = max(2, height // 5)

    def fitting(text: str, smallest: int) -> int | None:
        for size in range(max(smallest, int(height * 0.7)), smallest - 1, -1):
            if draw.textlength(text, font=banner_font(size)) <= width - 2 * pad:
                return size
        return None

    text, size = texts[-1], 6
    for candidate in texts:
        last = candidate is texts[-1]
        found = fitting(candidate, 6 if last else max(7, height // 2))
        if found is not None:
            text, size = candidate, found
            break
    draw.text((pad, height / 2), text, font=banner_font(size), fill=_BANNER_COLOUR, anchor="lm")
    return np.asarray(image)


def sc_canvas(picture: ScPicture, model: ModelIdentity) -> np.ndarray:
    """The SC's pixels: banner on top, original (left) beside its CAM overlay (right)."""
    pixels = np.asarray(picture.pixels)
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError(f"picture pixels must be uint8 (H, W), got {pixels.dtype} {pixels.shape}")
    cam = np.asarray(picture.cam, dtype=np.float64)
    if cam.ndim != 2:
        raise ValueError(f"the CAM must be a 2-D map, got shape {cam.shape}")
    height, width = pixels.shape
    version = f"v{model.version}" if model.version is not None else UNREGISTERED
    texts = (
        f"{BANNER_TEXT}   p(abnormal) = {picture.probability:.3f}   {model.name} {version}",
        f"{BANNER_TEXT}   p = {picture.probability:.3f}",
    )
    band = _banner(2 * width, max(16, height // 12), texts)
    left = np.repeat(pixels[..., None], 3, axis=2)
    return np.concatenate([band, np.concatenate([left, overlay(pixels, cam)], axis=1)], axis=0)


def _secondary_capture(
    picture: ScPicture, model: ModelIdentity, number: int, series_uid: str, sop_uid: str
) -> hd.sc.SCImage:
    header = _header(picture.source)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=header,
        pixel_array=sc_canvas(picture, model),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=series_uid,
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=sop_uid,
        instance_number=number,
        manufacturer=RESULT_MANUFACTURER,
        patient_orientation=("L", "F"),  # replaced below: see the comment there
        contributing_equipment=[_ai_equipment(model)],
        series_description=SC_SERIES_DESCRIPTION,
        manufacturer_model_name=model.name,
        software_versions=model.software_version,
    )
    # SCImage has no typed API for these three. PatientOrientation: highdicom insists on two
    # single letters; both panels keep the source's orientation, so copy it (or leave it
    # empty, Type 2 "unknown", when the source has none). BurnedInAnnotation: the banner.
    # SourceImageSequence: the image this capture was derived from.
    sc.PatientOrientation = header.get("PatientOrientation", "")
    sc.BurnedInAnnotation = "YES"
    reference = pydicom.Dataset()
    reference.ReferencedSOPClassUID = header.SOPClassUID
    reference.ReferencedSOPInstanceUID = header.SOPInstanceUID
    frames = _frame_numbers(header, picture.frame)
    if frames is not None:
        reference.ReferencedFrameNumber = frames[0]
    sc.SourceImageSequence = [reference]
    return sc


def build_secondary_captures(
    finding: StudyFinding, model: ModelIdentity, pictures: Sequence[ScPicture]
) -> list[hd.sc.SCImage]:
    """One Secondary Capture per picture of a flagged study, numbered as its image in the
    study (`finding.images` order), in one series with deterministic UIDs."""
    if not finding.flagged:
        raise ValueError(f"study {finding.study_uid} is not flagged: no Secondary Capture")
    numbers = {
        (str(image.source.SOPInstanceUID), image.frame): number
        for number, image in enumerate(finding.images, 1)
    }
    uid = partial(result_uid, finding.study_uid, finding.instance_set, model.key)
    captures, seen = [], set()
    for picture in pictures:
        key = (str(picture.source.SOPInstanceUID), picture.frame)
        if key not in numbers or key in seen:
            raise ValueError(f"picture of {key[0]} frame {key[1]}: not a scored image, or twice")
        seen.add(key)
        number = numbers[key]
        sop_uid = uid("sc", number)
        captures.append(_secondary_capture(picture, model, number, uid("sc-series"), sop_uid))
    return captures


# --- recognising our own results --------------------------------------------------------


def is_own_result(
    modality: str | None,
    sop_class_uid: str | None,
    series_description: str | None,
    manufacturer: str | None,
) -> bool:
    """Whether a PACS listing entry is one of our results: an SR or SC (by SOP class, or by
    modality where the listing has no SOP class) with our series description or made by us."""
    sop = _clean_uid(sop_class_uid) if sop_class_uid else ""
    kind = (modality or "").strip().upper()
    description = (series_description or "").strip()
    by_us = (manufacturer or "").strip() == RESULT_MANUFACTURER
    is_sr = sop in _SR_CLASSES if sop else kind == "SR"
    is_sc = sop == SecondaryCaptureImageStorage if sop else kind == "OT"
    if is_sr:
        return description == SR_SERIES_DESCRIPTION or by_us
    if is_sc:
        return description == SC_SERIES_DESCRIPTION or by_us
    return False
