"""What the results say: the constants and codes they carry, and the typed findings.

`ModelIdentity` names the model, `StudyFinding` / `ImageFinding` are what a screened study
goes in with, `ScPicture` what a Secondary Capture (and a heatmap) shows, `SrContent` /
`SrImage` what an SR gives back. Each checks its values when made (probabilities finite and
in [0, 1], flagged exactly when probability > threshold).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from mura_core.decisions import flagged
from mura_core.errors import MuraError

RESULT_MANUFACTURER = "mura-screen"
SR_SERIES_DESCRIPTION = "mura-screen AI findings (SR)"
SC_SERIES_DESCRIPTION = "mura-screen AI overlays (SC), not for diagnosis"
HEATMAP_SERIES_DESCRIPTION = "mura-screen AI heatmap, not for diagnosis"
KOS_SERIES_DESCRIPTION = "mura-screen AI key images"
SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902
HEATMAP_SERIES_NUMBER = 9903  # one series per heatmap: a viewer shows one object per series
KOS_SERIES_NUMBER = 9904
UNREGISTERED = "unregistered"  # the software version of a model bundle with no registry version
BANNER_TEXT = "AI — not for diagnosis"
MODEL_URI_PARAMETER = "mlflow_model_uri="  # prefix of the TID 4019 parameter holding the URI
# prefix of the TID 4019 parameter holding the digest of the instance set the result UIDs hash
# (`uids.instance_set_digest`): `mura results` finds a version's other objects by it
INSTANCE_SET_PARAMETER = "instance_set_sha256="
STUDY_TRACKING_ID = "mura-screen study finding"
# The study finding in words, a TEXT Comment of the study group: what a viewer that draws
# measurement groups as annotations (OHIF v3) shows beside the probability and threshold.
STUDY_COMMENT = "{finding} (AI: {model})"
IMAGE_TRACKING_ID = "mura-screen image {number}"
RESULT_KINDS = (
    "sr-series",
    "sr",
    "sr-tracking",
    "sc-series",
    "sc",
    "heatmap-series",
    "heatmap",
    "kos-series",
    "kos",
)

# Coded concepts (all from pydicom's dictionary of the DICOM standard, except the IHE one).
PROBABILITY = codes.DCM.Probability  # (122157, DCM): image and study probability
THRESHOLD = codes.DCM.ThresholdValue  # (122411, DCM): the flagging threshold
UNIT_ONE = codes.UCUM.NoUnits  # ("1", UCUM, "no units"): probabilities are dimensionless
COMMENT = codes.DCM.Comment  # (121106, DCM): the study finding in words (STUDY_COMMENT)
NORMALITY = codes.DCM.Normality  # (121402, DCM): the study finding, valued from CID 222
ABNORMAL = codes.SCT.Abnormal  # (263654008, SCT): flagged (probability > threshold)
NORMAL = codes.SCT.Normal  # (17621005, SCT): not flagged
FINDING_TYPE = codes.NCIt.Abnormality  # (C9440, NCIt): what the probability is of
PROCEDURE_REPORTED = codes.SCT.PlainRadiography  # (168537006, SCT): the procedure analysed
ALGORITHM_FAMILY = codes.DCM.ArtificialIntelligence  # (123110, DCM)
# The heatmap's one segment: where the model looked, for a finding of abnormality.
HEATMAP_CATEGORY = codes.SCT.MorphologicallyAbnormalStructure  # (49755003, SCT), CID 7150
HEATMAP_LABEL = "AI attention (Grad-CAM)"
# The KOS title (CID 7010): "Of Interest" is the generic key-image note (IHE KIN) that PACS
# viewers list as key images; the other titles name an audience or a rejection.
KOS_TITLE = codes.DCM.OfInterest  # (113000, DCM)
# IHE RAD AI Results (AIR) Rev 1.1, 6.5.3.1: the purpose of reference of the algorithm's
# Contributing Equipment item (a trial-implementation code of the IHE scheme).
IHE_PROCESSING_ALGORITHM = hd.sr.CodedConcept("Newcode1", "99IHE", "Processing Algorithm")


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
    def label(self) -> str:
        """How people read it: `mura-cnn v3`, or `mura-cnn unregistered`."""
        version = f"v{self.version}" if self.version is not None else UNREGISTERED
        return f"{self.name} {version}"

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
        if self.flagged != bool(flagged(self.probability, self.threshold)):
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

    def image_numbers(self) -> dict[tuple[str, int], int]:
        """Each image's number in the study (1-based, `images` order), by (SOP Instance UID,
        frame): what its Secondary Capture and heatmap are numbered."""
        return {
            (str(image.source.SOPInstanceUID), image.frame): number
            for number, image in enumerate(self.images, 1)
        }


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
    """What one of our SRs says, read back: the finding, the model, the image entries, the
    digest of the instance set its UIDs hash (None: an SR written before it was recorded)."""

    study_uid: str
    probability: float
    threshold: float
    flagged: bool
    model: ModelIdentity
    images: tuple[SrImage, ...]
    instance_set_digest: str | None = None
