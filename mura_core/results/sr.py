"""The TID 1500 SR of a screened study (`build_sr`), and reading one back (`read_sr`, and
`predecessors`: the SRs it supersedes).

A new version of a study's result (its instance set changed, or another model screened it)
names the SR it supersedes in its Predecessor Documents Sequence (highdicom's
`previous_versions`): the PACS holds the chain, newest first by following it back.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import Comprehensive3DSRStorage

from mura_core.results.content import (
    ABNORMAL,
    ALGORITHM_FAMILY,
    COMMENT,
    FINDING_TYPE,
    IMAGE_TRACKING_ID,
    INSTANCE_SET_PARAMETER,
    MODEL_URI_PARAMETER,
    NORMAL,
    NORMALITY,
    PROBABILITY,
    PROCEDURE_REPORTED,
    RESULT_MANUFACTURER,
    SR_SERIES_DESCRIPTION,
    SR_SERIES_NUMBER,
    STUDY_COMMENT,
    STUDY_TRACKING_ID,
    THRESHOLD,
    UNIT_ONE,
    UNREGISTERED,
    ImageFinding,
    ModelIdentity,
    ResultReadError,
    SrContent,
    SrImage,
    StudyFinding,
)
from mura_core.results.equipment import ai_equipment, frame_numbers, source_header
from mura_core.results.uids import device_uid, instance_set_digest, result_uid

# --- the SR -----------------------------------------------------------------------------


def _algorithm(model: ModelIdentity, digest: str) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=model.name,
        version=model.software_version,
        parameters=[MODEL_URI_PARAMETER + model.uri, INSTANCE_SET_PARAMETER + digest],
        family=ALGORITHM_FAMILY,
        manufacturer=RESULT_MANUFACTURER,
    )


def _group_source(image: ImageFinding, header: pydicom.Dataset) -> hd.sr.ImageContentItem:
    return hd.sr.SourceImageForMeasurementGroup.from_source_image(
        header, referenced_frame_numbers=frame_numbers(header, image.frame)
    )


def _whole_image(
    image: ImageFinding, header: pydicom.Dataset, graphic: str
) -> hd.sr.CoordinatesForMeasurement:
    """The whole image as the region a probability was inferred from (TID 320 SCOORD):
    a closed POLYLINE around it, or its four corners (MULTIPOINT). Image coordinates are
    (column, row), 0,0 the top-left corner of the top-left pixel."""
    columns, rows = float(header.Columns), float(header.Rows)
    corners = [[0.0, 0.0], [columns, 0.0], [columns, rows], [0.0, rows]]
    if graphic == "POLYLINE":
        corners.append([0.0, 0.0])
    source = hd.sr.SourceImageForRegion.from_source_image(
        header, referenced_frame_numbers=frame_numbers(header, image.frame)
    )
    return hd.sr.CoordinatesForMeasurement(graphic, np.array(corners), source)


def _study_group(
    finding: StudyFinding, model: ModelIdentity, headers: Sequence[pydicom.Dataset], uid: str
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    pairs = list(zip(finding.images, headers, strict=True))
    probability = hd.sr.Measurement(
        name=PROBABILITY,
        value=float(finding.probability),
        unit=UNIT_ONE,
        referenced_coordinates=[_whole_image(i, h, "POLYLINE") for i, h in pairs],
    )
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uid, identifier=STUDY_TRACKING_ID),
        finding_type=FINDING_TYPE,
        algorithm_id=_algorithm(model, instance_set_digest(finding.instance_set)),
        measurements=[
            probability,
            hd.sr.Measurement(name=THRESHOLD, value=float(finding.threshold), unit=UNIT_ONE),
        ],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                name=NORMALITY, value=ABNORMAL if finding.flagged else NORMAL
            )
        ],
        source_images=[_group_source(i, h) for i, h in pairs],
    )
    words = STUDY_COMMENT.format(
        finding=(ABNORMAL if finding.flagged else NORMAL).meaning, model=model.label
    )
    group[0].ContentSequence.append(
        hd.sr.TextContentItem(name=COMMENT, value=words, relationship_type="CONTAINS")
    )
    return group


def _image_group(
    number: int,
    image: ImageFinding,
    header: pydicom.Dataset,
    algorithm: hd.sr.AlgorithmIdentification,
    uid: str,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    source = hd.sr.SourceImageForMeasurement.from_source_image(
        header, referenced_frame_numbers=frame_numbers(header, image.frame)
    )
    probability = hd.sr.Measurement(
        name=PROBABILITY,
        value=float(image.probability),
        unit=UNIT_ONE,
        referenced_images=[source],
        referenced_coordinates=[_whole_image(image, header, "MULTIPOINT")],
    )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=uid, identifier=IMAGE_TRACKING_ID.format(number=number)
        ),
        finding_type=FINDING_TYPE,
        algorithm_id=algorithm,
        measurements=[probability],
        source_images=[_group_source(image, header)],
    )


def device_observer(model: ModelIdentity) -> hd.sr.ObserverContext:
    """The model as an observer (a device): in the SR's and the KOS's observation context."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=device_uid(model),
        name=model.name,
        manufacturer_name=RESULT_MANUFACTURER,
        model_name=model.name,
    )
    return hd.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=device
    )


def build_sr(
    finding: StudyFinding, model: ModelIdentity, previous: Sequence[pydicom.Dataset] = ()
) -> hd.sr.Comprehensive3DSR:
    """The study's TID 1500 SR (a highdicom Comprehensive 3D SR), ready to store; `previous`:
    the SR it supersedes (its header: study, series, SOP class and instance UIDs), if any."""
    uid = partial(result_uid, finding.study_uid, finding.instance_set, model.key)
    digest = instance_set_digest(finding.instance_set)
    headers = [source_header(image.source) for image in finding.images]
    groups = [_study_group(finding, model, headers, uid("sr-tracking", 0))]
    for number, (image, header) in enumerate(zip(finding.images, headers, strict=True), 1):
        algorithm = _algorithm(model, digest)
        groups.append(_image_group(number, image, header, algorithm, uid("sr-tracking", number)))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=device_observer(model)
        ),
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
        previous_versions=list(previous) or None,
        contributing_equipment=[ai_equipment(model)],
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


def _texts(group: hd.sr.MeasurementsAndQualitativeEvaluations, name: object) -> list[str]:
    return [str(item.value) for item in hd.sr.utils.find_content_items(group[0], name=name)]


def _parameters(group: hd.sr.MeasurementsAndQualitativeEvaluations, prefix: str) -> list[str]:
    found = _texts(group, codes.DCM.AlgorithmParameters)
    return [p.removeprefix(prefix) for p in found if p.startswith(prefix)]


def _read_model(group: hd.sr.MeasurementsAndQualitativeEvaluations) -> ModelIdentity:
    names = _texts(group, codes.DCM.AlgorithmName)
    versions = _texts(group, codes.DCM.AlgorithmVersion)
    uris = _parameters(group, MODEL_URI_PARAMETER)
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
    digests = _parameters(study[0], INSTANCE_SET_PARAMETER)
    return SrContent(
        study_uid=str(ds.StudyInstanceUID),
        probability=_one_value(study[0], PROBABILITY),
        threshold=_one_value(study[0], THRESHOLD),
        flagged=_read_flag(study[0]),
        model=_read_model(study[0]),
        images=tuple(_read_image(g) for g in groups if g is not study[0]),
        instance_set_digest=digests[0] if len(digests) == 1 else None,
    )


def predecessors(ds: pydicom.Dataset) -> tuple[str, ...]:
    """The SOP Instance UIDs of the documents an SR supersedes (its Predecessor Documents
    Sequence: study → series → instances), in the order it lists them."""
    return tuple(
        str(instance.ReferencedSOPInstanceUID)
        for study in ds.get("PredecessorDocumentsSequence", [])
        for series in study.get("ReferencedSeriesSequence", [])
        for instance in series.get("ReferencedSOPSequence", [])
    )
