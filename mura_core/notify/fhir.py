"""A notice as one FHIR R4 transaction Bundle, every resource validated with `fhir.resources`.

`fhir.resources` 8 models R5 at its top level and R4B (R4's ballot update, the same
DiagnosticReport, Observation, Device and Bundle) in `fhir.resources.R4B`: those are used.
The Bundle (`build_bundle`; `read_bundle` reads one back, validating it again):

- **Device**: the model (deviceName of type `model-name`, version, manufacturer
  `mura-screen`), identified by its Device UID (`urn:dicom:uid` / `urn:oid:2.25.…`, as in
  the SR written back);
- **Observation**: status `preliminary`, category `imaging`, code Normality (DCM 121402),
  value Abnormal (SCT 263654008) or Normal (SCT 17621005), interpretation `A`/`N`, method
  Artificial Intelligence (DCM 123110), the body part, the device, components Probability
  (DCM 122157) and Threshold Value (DCM 122411) in UCUM `1`, derived from the ImagingStudy
  identified by its StudyInstanceUID;
- **DiagnosticReport**: status `preliminary`, category `RAD`, code LOINC 18748-4
  (diagnostic imaging study), identifiers: the notice's control ID (system
  `urn:mura-screen:notice`) and the accession number (type `ACSN`), the ImagingStudy (by its
  identifier `urn:dicom:uid` / `urn:oid:<StudyInstanceUID>`), the Observation as its result,
  a conclusion ("… not for diagnosis") and code; the priority as a v3 ActPriority tag.

No Patient resource and no subject: no patient identifier is sent. Each entry is a
conditional create (`ifNoneExist` on its identifier), so a server that took a Bundle once
keeps one copy when the same notice is sent again.
"""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation

from mura_core.notify.config import ACT_PRIORITY
from mura_core.notify.ids import resource_uuid
from mura_core.notify.notice import Notice
from mura_core.results.content import RESULT_MANUFACTURER
from mura_core.results.uids import device_uid

DCM = "http://dicom.nema.org/resources/ontology/DCM"
SCT = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
DICOM_UID = "urn:dicom:uid"
NOTICE_SYSTEM = "urn:mura-screen:notice"
IDENTIFIER_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"
DIAGNOSTIC_SERVICE = "http://terminology.hl7.org/CodeSystem/v2-0074"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
ACT_PRIORITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActPriority"
CONTENT_TYPE = "application/fhir+json"


def _concept(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}]}


def _quantity(value: float) -> dict[str, Any]:
    return {"value": float(value), "unit": "1", "system": UCUM, "code": "1"}


def _imaging_study(notice: Notice) -> dict[str, Any]:
    """A logical reference: the ImagingStudy by its StudyInstanceUID."""
    return {
        "type": "ImagingStudy",
        "identifier": {"system": DICOM_UID, "value": f"urn:oid:{notice.study_uid}"},
    }


def _finding(notice: Notice) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The finding as a concept, its interpretation, and one line saying it."""
    if notice.flagged:
        concept = _concept(SCT, "263654008", "Abnormal")
        interpretation = _concept(INTERPRETATION, "A", "Abnormal")
    else:
        concept = _concept(SCT, "17621005", "Normal")
        interpretation = _concept(INTERPRETATION, "N", "Normal")
    side = "above" if notice.flagged else "not above"
    text = (
        f"AI screening (mura-screen), preliminary, not for diagnosis: "
        f"{'abnormal' if notice.flagged else 'normal'}, probability {notice.probability:.4f} "
        f"{side} threshold {notice.threshold:.4f} ({notice.body_part}; model "
        f"{notice.model.name} version {notice.model.software_version})"
    )
    return concept, interpretation, text


def device(notice: Notice) -> Device:
    model = notice.model
    return Device(
        identifier=[{"system": DICOM_UID, "value": f"urn:oid:{device_uid(model)}"}],
        manufacturer=RESULT_MANUFACTURER,
        deviceName=[{"name": model.name, "type": "model-name"}],
        version=[{"value": model.software_version}],
        type={"text": "AI model"},
    )


def observation(notice: Notice, device_url: str) -> Observation:
    concept, interpretation, _ = _finding(notice)
    return Observation(
        identifier=[{"system": NOTICE_SYSTEM, "value": f"{notice.control_id}-observation"}],
        status="preliminary",
        category=[_concept(OBSERVATION_CATEGORY, "imaging", "Imaging")],
        code=_concept(DCM, "121402", "Normality"),
        valueCodeableConcept=concept,
        interpretation=[interpretation],
        effectiveDateTime=notice.screened_at,
        issued=notice.screened_at,
        method=_concept(DCM, "123110", "Artificial Intelligence"),
        bodySite={"text": notice.body_part},
        device={"reference": device_url},
        derivedFrom=[_imaging_study(notice)],
        component=[
            {
                "code": _concept(DCM, "122157", "Probability"),
                "valueQuantity": _quantity(notice.probability),
            },
            {
                "code": _concept(DCM, "122411", "Threshold Value"),
                "valueQuantity": _quantity(notice.threshold),
            },
        ],
    )


def diagnostic_report(notice: Notice, priority: str, observation_url: str) -> DiagnosticReport:
    concept, _, text = _finding(notice)
    identifiers: list[dict[str, Any]] = [{"system": NOTICE_SYSTEM, "value": notice.control_id}]
    if notice.accession_number:
        accession = _concept(IDENTIFIER_TYPE, "ACSN", "Accession ID")
        identifiers.append({"type": accession, "value": notice.accession_number})
    return DiagnosticReport(
        meta={"tag": [{"system": ACT_PRIORITY_SYSTEM, "code": ACT_PRIORITY[priority]}]},
        identifier=identifiers,
        status="preliminary",
        category=[_concept(DIAGNOSTIC_SERVICE, "RAD", "Radiology")],
        code=_concept(LOINC, "18748-4", "Diagnostic imaging study"),
        effectiveDateTime=notice.screened_at,
        issued=notice.screened_at,
        imagingStudy=[_imaging_study(notice)],
        result=[{"reference": observation_url}],
        conclusion=text,
        conclusionCode=[concept],
    )


def _token(identifier: Any) -> str:
    """An identifier as a FHIR search token: `system|value`."""
    return f"{identifier.system}|{identifier.value}"


def _entry(url: str, resource: Any, kind: str, identifier: str) -> dict[str, Any]:
    """A conditional create: the server keeps the one it has with this identifier."""
    return {
        "fullUrl": url,
        "resource": resource,
        "request": {"method": "POST", "url": kind, "ifNoneExist": f"identifier={identifier}"},
    }


def bundle(notice: Notice, priority: str) -> Bundle:
    """The transaction Bundle of `notice` (see the module docstring), validated."""
    control = notice.control_id
    urls = {kind: f"urn:uuid:{resource_uuid(control, kind)}" for kind in ("dev", "obs", "dr")}
    made_device = device(notice)
    made_observation = observation(notice, urls["dev"])
    report = diagnostic_report(notice, priority, urls["obs"])
    return Bundle(
        type="transaction",
        identifier={"system": NOTICE_SYSTEM, "value": control},
        timestamp=notice.screened_at,
        entry=[
            _entry(urls["dev"], made_device, "Device", _token(made_device.identifier[0])),
            _entry(
                urls["obs"], made_observation, "Observation", _token(made_observation.identifier[0])
            ),
            _entry(urls["dr"], report, "DiagnosticReport", _token(report.identifier[0])),
        ],
    )


def build_bundle(notice: Notice, priority: str) -> str:
    """The Bundle of `notice` as JSON text (what is POSTed, and what the outbox keeps)."""
    return bundle(notice, priority).model_dump_json(exclude_none=True)


def read_bundle(text: str | bytes) -> Bundle:
    """A Bundle back from JSON, validated (R4B models)."""
    return Bundle.model_validate_json(text)
