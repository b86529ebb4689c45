"""Deterministic identifiers of a notice: the same study, instance set and model give the
same ones, so a resend (from the outbox, or a re-run) is recognisably the same message.

- `control_id`: 20 hex characters (80 bits) of sha256 over (the study's UID, the digest of
  its instance set, the model's name/version) — how `mura_core.results.uids` names the SR
  written back, with its own prefix. It is the HL7 message control ID (MSH-10, at most 20
  characters in v2.5) and the FHIR resources' notice identifier; receivers that remember
  control IDs can drop a duplicate. A changed instance set or a new model version makes a
  new one.
- `resource_uuid`: a version-8 UUID per resource kind from the control ID, for the
  `urn:uuid:` full URLs inside one FHIR transaction Bundle.
"""

from __future__ import annotations

import hashlib
import json
import uuid

from mura_core.results.uids import clean_uid

CONTROL_ID_LENGTH = 20  # HL7 v2.5 MSH-10 is ST of at most 20 characters


def _digest(*parts: str) -> bytes:
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode("utf-8")).digest()


def control_id(study_uid: str, instance_set: str, model_key: str) -> str:
    """The notice's control ID: `instance_set` is `instance_set_digest(...)` of the study,
    `model_key` a `ModelIdentity.key` (name/version)."""
    digest = _digest("mura-screen/notice/v1", clean_uid(study_uid), instance_set, model_key)
    return digest.hex()[:CONTROL_ID_LENGTH]


def resource_uuid(control: str, kind: str) -> str:
    """A UUID (RFC 9562 version 8) for one resource of the notice `control`."""
    value = int.from_bytes(_digest("mura-screen/notice-resource/v1", control, kind)[:16], "big")
    value = (value & ~(0xF << 76)) | (0x8 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return str(uuid.UUID(int=value))
