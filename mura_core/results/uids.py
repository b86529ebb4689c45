"""Deterministic UIDs: `2.25.` + an RFC 9562 version-8 UUID from sha256 of what names them.

A result object's UID hashes (source study UID, digest of its instance set, model key,
object kind, index): a re-run or a retried upload makes the same objects, a new model
version or a changed instance set new ones. `instance_set_digest` (sorted unique SOP
Instance UIDs) is also what nightly compares to see a changed study.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from mura_core.results.content import RESULT_KINDS, ModelIdentity


def clean_uid(uid: object) -> str:
    return str(uid).strip("\0 ")


def instance_set_digest(instance_uids: Iterable[str]) -> str:
    """Order-independent hex digest of a study's instance set (duplicates count once)."""
    unique = sorted({clean_uid(uid) for uid in instance_uids})
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

    `kind` is one of RESULT_KINDS; `index` the image number within the study for "sc" and
    "heatmap" (and their series), the measurement group for "sr-tracking", 0 otherwise.
    """
    digest = instance_set_digest(instance_uids)
    return digest_result_uid(study_uid, digest, model_version, kind, index)


def digest_result_uid(
    study_uid: str, digest: str, model_version: str | None, kind: str, index: int = 0
) -> str:
    """`result_uid` from the instance set's digest (as an SR records it: `mura results`
    finds a version's other objects by their UIDs)."""
    if kind not in RESULT_KINDS:
        raise ValueError(f"unknown result kind {kind!r}; expected one of {RESULT_KINDS}")
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    study = clean_uid(study_uid)
    return _hash_uid("mura-screen/result/v1", study, digest, model_version, kind, index)


def frame_of_reference_uid(source_sop_uid: str) -> str:
    """The Frame of Reference our heatmaps of one source image define when the source has
    none (a projection radiograph): one per source image, whatever the model or version."""
    return _hash_uid("mura-screen/frame-of-reference/v1", clean_uid(source_sop_uid))


def device_uid(model: ModelIdentity) -> str:
    """The model's Device UID (IHE AI Results): one per model name and version."""
    return _hash_uid("mura-screen/device/v1", model.name, model.version)
