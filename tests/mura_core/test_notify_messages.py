"""Telling the worklist, the pure part: addresses, notices, control IDs, the HL7 ORU^R01 (built
and parsed with hl7apy's v2.5 model), ACKs, and the FHIR Bundle (validated with
fhir.resources' R4B models). No socket, no Ray."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pydicom
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.parser import parse_message

from mura_core.errors import ConfigError
from mura_core.notify.address import FHIR, MLLP, NotifyAddress
from mura_core.notify.config import NotifyConfig
from mura_core.notify.fhir import NOTICE_SYSTEM, build_bundle, read_bundle
from mura_core.notify.hl7 import build_oru, parse_ack
from mura_core.notify.ids import CONTROL_ID_LENGTH
from mura_core.notify.notice import Notice, notices_from_findings
from mura_core.notify.summary import NotifyFailure, NotifySummary
from mura_core.results import ImageFinding, ModelIdentity, StudyFinding, device_uid

MODEL = ModelIdentity(name="mura-cnn", version="3", uri="models:/mura-cnn/3")
WHEN = "2026-12-08T21:30:05+00:00"


def _header(study: str, sop: str, accession: str | None) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.StudyInstanceUID, ds.SOPInstanceUID = study, sop
    ds.PatientID, ds.PatientName = "PAT-0042", "Doe^Jane"
    if accession is not None:
        ds.AccessionNumber = accession
    return ds


def _notice(**change: object) -> Notice:
    headers = [_header("1.2.840.99.1", f"1.2.840.99.1.{i}", "ACC-7") for i in (1, 2)]
    finding = StudyFinding(
        "1.2.840.99.1",
        0.8125,
        0.5,
        True,
        tuple(ImageFinding(h, p) for h, p in zip(headers, (0.7, 0.925), strict=True)),
        instance_uids=("1.2.840.99.1.1", "1.2.840.99.1.2", "1.2.840.99.1.3"),
    )
    (notice,) = notices_from_findings([("st-1a2b", finding)], {"st-1a2b": "XR_WRIST"}, MODEL, WHEN)
    return dataclasses.replace(notice, **change)


# -- addresses and flags -------------------------------------------------------------------


def test_addresses_parse_and_print_back() -> None:
    mllp = NotifyAddress.parse("mllp://ris.example.org:2575")
    assert (mllp.protocol, mllp.host, mllp.port, str(mllp)) == (
        MLLP,
        "ris.example.org",
        2575,
        "mllp://ris.example.org:2575",
    )
    fhir = NotifyAddress.parse("fhir+https://fhir.example.org/r4/")
    assert (fhir.protocol, fhir.url, fhir.tls) == (FHIR, "https://fhir.example.org:443/r4", True)
    assert NotifyAddress.parse("fhir+http://127.0.0.1:8080/fhir").url == (
        "http://127.0.0.1:8080/fhir"
    )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("hl7://ris:2575", "is not a worklist address: use mllp://HOST:PORT"),
        ("mllp://ris", "is not a worklist address"),
        ("mllp://ris:70000", "port 70000 out of range"),
        ("fhir+http://fhir.example.org/r4", "fhir+http is for this machine only"),
        ("fhir+https://user:s3cret@fhir.example.org/r4", "put no credentials in the address"),
    ],
)
def test_a_bad_address_is_one_line(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)) as raised:
        NotifyAddress.parse(text)
    assert "\n" not in str(raised.value) and "s3cret" not in str(raised.value)


def test_flags_are_checked_when_read(tmp_path: Path) -> None:
    assert NotifyConfig("mllp://127.0.0.1:2575").priority_of(True) == "S"
    assert NotifyConfig("mllp://127.0.0.1:2575", priority="A").priority_of(False) == "R"
    with pytest.raises(ConfigError, match="--notify-priority 'X': one of S"):
        NotifyConfig("mllp://127.0.0.1:2575", priority="X")
    with pytest.raises(ConfigError, match="--notify-token is for a FHIR server"):
        NotifyConfig("mllp://127.0.0.1:2575", token_file=tmp_path / "token")


# -- notices and control IDs ---------------------------------------------------------------


def test_a_notice_carries_the_study_and_no_patient() -> None:
    notice = _notice()
    assert (notice.study_uid, notice.accession_number, notice.body_part) == (
        "1.2.840.99.1",
        "ACC-7",
        "XR_WRIST",
    )
    assert "PAT-0042" not in repr(notice) and "Doe" not in repr(notice)
    with pytest.raises(ValueError, match="contradicts"):
        _notice(flagged=False)


def test_control_ids_are_deterministic_and_name_the_result() -> None:
    notice = _notice()
    assert len(notice.control_id) == CONTROL_ID_LENGTH
    assert _notice().control_id == notice.control_id  # a re-run: the same message
    assert _notice(screened_at="2027-01-01T00:00:00+00:00").control_id == notice.control_id
    newer = dataclasses.replace(MODEL, version="4", uri="models:/mura-cnn/4")
    assert _notice(model=newer).control_id != notice.control_id
    assert _notice(instance_set="0" * 64).control_id != notice.control_id


# -- HL7 v2.5 ORU^R01 ----------------------------------------------------------------------


def _parsed(text: str) -> Message:
    return parse_message(text.strip("\r"), validation_level=VALIDATION_LEVEL.STRICT)


def _observations(message: Message) -> dict[str, str]:
    order = message.ORU_R01_PATIENT_RESULT.ORU_R01_ORDER_OBSERVATION
    return {
        group.obx.obx_3.obx_3_1.to_er7(): group.obx.obx_5.to_er7()
        for group in order.children
        if group.name == "ORU_R01_OBSERVATION"
    }


def test_the_oru_carries_accession_study_uid_finding_and_model() -> None:
    notice = _notice()
    text = build_oru(notice, "S")
    message = _parsed(text)
    assert message.validate()
    assert message.msh.msh_9.to_er7() == "ORU^R01^ORU_R01"
    assert message.msh.msh_10.to_er7() == notice.control_id
    assert message.msh.msh_12.to_er7() == "2.5"
    order = message.ORU_R01_PATIENT_RESULT.ORU_R01_ORDER_OBSERVATION
    assert order.obr.obr_3.to_er7() == order.obr.obr_18.to_er7() == "ACC-7"
    assert (order.obr.obr_5.to_er7(), order.obr.obr_25.to_er7()) == ("S", "P")
    facts = _observations(message)
    assert facts["121402"] == "263654008^Abnormal^SCT"
    assert (float(facts["122157"]), float(facts["122411"])) == (0.8125, 0.5)
    assert facts["110180"] == "1.2.840.99.1" and facts["123014"] == "XR_WRIST"
    assert (facts["111001"], facts["111003"]) == ("mura-cnn", "3")
    for group in order.children:
        if group.name == "ORU_R01_OBSERVATION":
            assert group.obx.obx_11.to_er7() == "P"  # preliminary
    assert device_uid(MODEL) in text
    assert "PID" not in {s.name for s in message.ORU_R01_PATIENT_RESULT.children}
    assert "PAT-0042" not in text and "Doe" not in text
    assert build_oru(notice, "S") == text  # a resend is byte for byte the same


def test_a_study_not_flagged_is_routine_and_normal() -> None:
    message = _parsed(build_oru(_notice(probability=0.25, flagged=False), "R"))
    order = message.ORU_R01_PATIENT_RESULT.ORU_R01_ORDER_OBSERVATION
    assert order.obr.obr_5.to_er7() == "R"
    assert _observations(message)["121402"] == "17621005^Normal^SCT"


def test_hl7_delimiters_in_a_value_are_escaped() -> None:
    text = build_oru(_notice(accession_number="A|B^C"), "S")
    order = _parsed(text).ORU_R01_PATIENT_RESULT.ORU_R01_ORDER_OBSERVATION
    assert order.obr.obr_3.to_er7() == "A\\F\\B\\S\\C"
    assert text.count("\r") == 11  # MSH ORC OBR NTE and 7 OBX: no segment was split


def _ack(code: str, control: str, error: str | None = None) -> str:
    ack = Message("ACK", version="2.5")
    ack.msh.msh_7, ack.msh.msh_9, ack.msh.msh_10 = "20261208", "ACK^R01^ACK", "9"
    ack.msh.msh_11, ack.msh.msh_12 = "P", "2.5"
    ack.msa.msa_1, ack.msa.msa_2 = code, control
    ack.msa.msa_3 = "unknown order ACC-7"  # free text: never repeated in our reasons
    if error:
        err = ack.add_segment("ERR")
        err.err_3, err.err_4 = error, "E"
    return ack.to_er7()


def test_acks_are_read_without_the_receivers_text() -> None:
    control = _notice().control_id
    assert parse_ack(_ack("AA", control), control).accepted
    refused = parse_ack(_ack("AE", control, "207^Application internal error^HL70357"), control)
    assert (refused.accepted, refused.reason) == (
        False,
        "AE: refused (application error), HL7 error 207",
    )
    rejected = parse_ack(_ack("AR", control), control)
    assert not rejected.accepted and rejected.reason.startswith("AR: rejected")
    assert "ACC-7" not in refused.reason + rejected.reason
    other = parse_ack(_ack("AA", "0" * 20), control)
    assert not other.accepted and "another message" in other.reason
    assert not parse_ack("no HL7 here", control).accepted


# -- FHIR R4 (R4B models) ------------------------------------------------------------------


def test_the_bundle_validates_and_says_the_same() -> None:
    notice = _notice()
    text = build_bundle(notice, "S")
    bundle = read_bundle(text)
    assert bundle.type == "transaction" and len(bundle.entry) == 3
    device, observation, report = (e.resource for e in bundle.entry)
    assert [type(r).__name__ for r in (device, observation, report)] == [
        "Device",
        "Observation",
        "DiagnosticReport",
    ]
    assert report.status == observation.status == "preliminary"
    ids = {
        (i.system, i.type.coding[0].code if i.type else None): i.value for i in report.identifier
    }
    assert ids == {(NOTICE_SYSTEM, None): notice.control_id, (None, "ACSN"): "ACC-7"}
    (study,) = report.imagingStudy
    assert (study.type, study.identifier.system, study.identifier.value) == (
        "ImagingStudy",
        "urn:dicom:uid",
        "urn:oid:1.2.840.99.1",
    )
    assert report.result[0].reference == bundle.entry[1].fullUrl
    assert observation.valueCodeableConcept.coding[0].code == "263654008"
    values = {c.code.coding[0].code: c.valueQuantity.value for c in observation.component}
    assert values == {"122157": 0.8125, "122411": 0.5}
    assert observation.device.reference == bundle.entry[0].fullUrl
    assert (device.deviceName[0].name, device.version[0].value) == ("mura-cnn", "3")
    assert report.meta.tag[0].code == "S"
    assert [e.request.method for e in bundle.entry] == ["POST"] * 3
    assert all(e.request.ifNoneExist.startswith("identifier=") for e in bundle.entry)
    assert "PAT-0042" not in text and "Patient" not in text
    assert build_bundle(notice, "S") == text


def test_a_summary_reads_back() -> None:
    summary = NotifySummary("mllp://127.0.0.1:2575", sent=3, queued=1, pending=1)
    summary = dataclasses.replace(summary, failures=(NotifyFailure("st-1", "AE: refused"),))
    assert NotifySummary.from_json(json.loads(json.dumps(summary.to_json()))) == summary
