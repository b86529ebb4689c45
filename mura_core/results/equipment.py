"""What the SR and the Secondary Captures share: the source header and the AI equipment item."""

from __future__ import annotations

from copy import deepcopy

import highdicom as hd
import pydicom
from pydicom.sr.codedict import codes

from mura_core.results.content import IHE_PROCESSING_ALGORITHM, RESULT_MANUFACTURER, ModelIdentity
from mura_core.results.uids import device_uid

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


def source_header(source: pydicom.Dataset) -> pydicom.Dataset:
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


def frame_numbers(header: pydicom.Dataset, frame: int) -> list[int] | None:
    """The 1-based frame reference of a multi-frame source; None for a single-frame one."""
    n_frames = int(header.get("NumberOfFrames") or 1)
    if n_frames > 1:
        return [frame + 1]  # highdicom checks it against NumberOfFrames
    if frame != 0:
        raise ValueError(f"frame {frame} of single-frame image {header.SOPInstanceUID}")
    return None


def ai_equipment(model: ModelIdentity) -> hd.ContributingEquipment:
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
