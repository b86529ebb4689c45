"""A notice as an HL7 v2.5 ORU^R01 message, built and validated with hl7apy, and its ACK read.

The message, segment by segment (`build_oru`; every value escaped, the whole validated
against hl7apy's v2.5 model at its strict level before it leaves):

- `MSH`: sending application `MURA-SCREEN`, date/time = when the study was screened (so a
  resend is byte for byte the same message), type `ORU^R01^ORU_R01`, control ID (MSH-10) =
  the notice's deterministic control ID (`mura_core.notify.ids`), processing ID `P`,
  version `2.5` (MSH-18 `UNICODE UTF-8` when a value is not ASCII);
- no `PID`: no patient name or ID is sent; the RIS finds the study by its accession number;
- `ORC`: order control `RE` (observations to follow), filler order number = accession;
- `OBR`: filler order number (OBR-3) and placer field 1 (OBR-18) = the accession number,
  universal service ID = plain radiography (SCT 168537006), priority (OBR-5) = the
  configured one for a flagged study (default `S`), `R` otherwise; observation and status
  date/time = when screened; result status (OBR-25) `P` (preliminary: nobody has read it);
- `NTE`: "AI screening result (mura-screen): preliminary, not for diagnosis";
- one `OBX` per fact, each with result status (OBX-11) `P` and the observation time:
  Normality (DCM 121402) = Abnormal (SCT 263654008) or Normal (SCT 17621005), abnormal
  flag (OBX-8) `A`/`N`, method (OBX-17) Artificial Intelligence (DCM 123110), equipment
  (OBX-18) the model as name/version with its Device UID; Probability (DCM 122157) and
  Threshold Value (DCM 122411) as NM in UCUM `1`; Study Instance UID (DCM 110180); Target
  Region (DCM 123014) = the body part; Algorithm Name (DCM 111001) and Version (111003).

`parse_ack` reads the receiver's answer: accepted when MSA-1 is `AA` or `CA` and MSA-2
names our control ID; `AE`/`AR` (`CE`/`CR`) is a refusal, told as the code and the HL7 error
code of ERR-3 (table 0357), never the receiver's free text (it may quote the study).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Group, Message
from hl7apy.exceptions import HL7apyException
from hl7apy.factories import datatype_factory
from hl7apy.parser import parse_message

from mura_core.notify.notice import Notice
from mura_core.results.content import RESULT_MANUFACTURER
from mura_core.results.uids import device_uid

VERSION = "2.5"
SENDING_APPLICATION = "MURA-SCREEN"
MESSAGE_TYPE = "ORU^R01^ORU_R01"
PRELIMINARY = "P"
NOTE = "AI screening result (mura-screen): preliminary, not for diagnosis"
ACCEPTED = ("AA", "CA")
REFUSED = ("AE", "AR", "CE", "CR")
# coded concepts: (code, meaning, coding system), as in the SR written back
NORMALITY = ("121402", "Normality", "DCM")
ABNORMAL = ("263654008", "Abnormal", "SCT")
NORMAL = ("17621005", "Normal", "SCT")
PROBABILITY = ("122157", "Probability", "DCM")
THRESHOLD = ("122411", "Threshold Value", "DCM")
STUDY_UID = ("110180", "Study Instance UID", "DCM")
TARGET_REGION = ("123014", "Target Region", "DCM")
ALGORITHM_NAME = ("111001", "Algorithm Name", "DCM")
ALGORITHM_VERSION = ("111003", "Algorithm Version", "DCM")
AI_METHOD = ("123110", "Artificial Intelligence", "DCM")
PLAIN_RADIOGRAPHY = ("168537006", "Plain radiography", "SCT")
UNIT_ONE = ("1", "no units", "UCUM")


def _text(value: str) -> str:
    """`value` as one HL7 string: its delimiters escaped (`|` → `\\F\\`, `^` → `\\S\\`, …)."""
    return datatype_factory("ST", value, version=VERSION).to_er7()


def _coded(concept: tuple[str, str, str]) -> str:
    return "^".join(_text(part) for part in concept)


def _number(value: float) -> str:
    """A float as HL7 NM: plain decimal, every digit of its shortest repr (no exponent)."""
    return format(Decimal(repr(float(value))), "f")


def hl7_time(when: dt.datetime) -> str:
    """HL7 TS: `YYYYMMDDHHMMSS+ZZZZ`."""
    return when.strftime("%Y%m%d%H%M%S%z")


@dataclass(frozen=True)
class Ack:
    """The receiver's answer: its code (MSA-1), whether it took the message, and why not."""

    code: str
    accepted: bool
    reason: str = ""


def _header(message: Message, notice: Notice) -> None:
    msh = message.msh
    msh.msh_3 = _text(SENDING_APPLICATION)
    msh.msh_7 = hl7_time(notice.when)
    msh.msh_9 = MESSAGE_TYPE
    msh.msh_10 = notice.control_id
    msh.msh_11 = "P"
    msh.msh_12 = VERSION


def _order(order: Group, notice: Notice, priority: str) -> None:
    when = hl7_time(notice.when)
    accession = _text(notice.accession_number or "")
    order.orc.orc_1 = "RE"
    obr = order.obr
    obr.obr_1 = "1"
    if accession:
        order.orc.orc_3 = accession
        obr.obr_3 = accession
        obr.obr_18 = accession
    obr.obr_4 = _coded(PLAIN_RADIOGRAPHY)
    obr.obr_5 = priority
    obr.obr_7 = when
    obr.obr_22 = when
    obr.obr_25 = PRELIMINARY
    order.add_segment("NTE").nte_3 = _text(NOTE)


def _observation(order: Group, number: int, kind: str, concept: tuple, value: str) -> Group:
    """One OBX: set ID, value type, identifier, value; preliminary, at the screening time."""
    group = order.add_group("ORU_R01_OBSERVATION")
    obx = group.obx
    obx.obx_1 = str(number)
    obx.obx_2 = kind
    obx.obx_3 = _coded(concept)
    obx.obx_5 = value
    obx.obx_11 = PRELIMINARY
    return group


def _observations(order: Group, notice: Notice) -> None:
    model = notice.model
    finding = _observation(
        order, 1, "CWE", NORMALITY, _coded(ABNORMAL if notice.flagged else NORMAL)
    ).obx
    finding.obx_8 = "A" if notice.flagged else "N"
    finding.obx_14 = hl7_time(notice.when)
    finding.obx_17 = _coded(AI_METHOD)
    finding.obx_18 = "^".join(
        [_text(f"{model.name}/{model.software_version}"), _text(RESULT_MANUFACTURER)]
        + [device_uid(model), "ISO"]
    )
    facts = [
        ("NM", PROBABILITY, _number(notice.probability)),
        ("NM", THRESHOLD, _number(notice.threshold)),
        ("ST", STUDY_UID, _text(notice.study_uid)),
        ("ST", TARGET_REGION, _text(notice.body_part)),
        ("ST", ALGORITHM_NAME, _text(model.name)),
        ("ST", ALGORITHM_VERSION, _text(model.software_version)),
    ]
    for number, (kind, concept, value) in enumerate(facts, start=2):
        obx = _observation(order, number, kind, concept, value).obx
        if kind == "NM":
            obx.obx_6 = _coded(UNIT_ONE)


def oru_message(notice: Notice, priority: str) -> Message:
    """The ORU^R01 of `notice` as an hl7apy message (validated by `build_oru`)."""
    message = Message("ORU_R01", version=VERSION, validation_level=VALIDATION_LEVEL.STRICT)
    _header(message, notice)
    order = message.add_group("ORU_R01_PATIENT_RESULT").add_group("ORU_R01_ORDER_OBSERVATION")
    _order(order, notice, priority)
    _observations(order, notice)
    return message


def build_oru(notice: Notice, priority: str) -> str:
    """The ORU^R01 of `notice`, ER7-encoded (segments end with `\\r`), validated."""
    message = oru_message(notice, priority)
    if not all(ord(c) < 128 for c in message.to_er7()):
        message.msh.msh_18 = "UNICODE UTF-8"
    message.validate()  # raises hl7apy's ValidationError: a bug of ours, never the user's
    return message.to_er7() + "\r"


def parse_ack(text: str, control: str) -> Ack:
    """The receiver's ACK to our message `control` (ER7, MLLP framing removed)."""
    try:
        ack = parse_message(
            text.strip("\r\n"), validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=False
        )
        code = ack.msa.msa_1.to_er7().strip().upper()
        acked = ack.msa.msa_2.to_er7().strip()
    except (HL7apyException, AttributeError, IndexError, ValueError) as exc:
        return Ack("", False, f"unreadable acknowledgement ({type(exc).__name__})")
    if acked != control:
        return Ack(code, False, "the acknowledgement names another message")
    if code in ACCEPTED:
        return Ack(code, True)
    error = _error_code(ack)
    meaning = "rejected" if code in ("AR", "CR") else "refused (application error)"
    if code not in REFUSED:
        meaning = "unknown acknowledgement code"
    return Ack(code, False, f"{code or '?'}: {meaning}" + (f", HL7 error {error}" if error else ""))


def _error_code(ack: Message) -> str:
    """ERR-3's code (table 0357), when the ACK has one; only letters and digits."""
    for segment in ack.children:
        if segment.name == "ERR":
            code = segment.to_er7().split("|")
            if len(code) > 3:
                first = code[3].split("^")[0]
                if re.fullmatch(r"[A-Za-z0-9]{1,10}", first):
                    return first
    return ""
