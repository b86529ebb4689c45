"""The one shape every stage passes around: a reference to one image of one study.

Sources produce `ImageRef`s, ingest turns them into shard rows, training and screening read
those rows. Keeping a single typed record means a body part or label never gets re-derived
(and re-interpreted) further down the pipeline.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class BodyPart(StrEnum):
    """The seven MURA study types, plus OTHER for anything else (hip, chest, tibia...)."""

    ELBOW = "XR_ELBOW"
    FINGER = "XR_FINGER"
    FOREARM = "XR_FOREARM"
    HAND = "XR_HAND"
    HUMERUS = "XR_HUMERUS"
    SHOULDER = "XR_SHOULDER"
    WRIST = "XR_WRIST"
    OTHER = "OTHER"


MURA_BODY_PARTS: tuple[BodyPart, ...] = tuple(p for p in BodyPart if p is not BodyPart.OTHER)

# Keywords found in DICOM BodyPartExamined / Study / Series descriptions and folder names.
# Order matters: the first body part whose pattern matches wins, so specific terms
# ("upper arm", "forearm") come before the generic ones they contain ("arm").
_KEYWORDS: tuple[tuple[BodyPart, tuple[str, ...]], ...] = (
    (BodyPart.FINGER, ("finger", "thumb", "digit", "phalanx", "phalanges")),
    (BodyPart.WRIST, ("wrist", "carpal", "carpus", "scaphoid")),
    (BodyPart.HAND, ("hand", "metacarpal")),
    (BodyPart.FOREARM, ("forearm", "radius", "ulna")),
    (BodyPart.ELBOW, ("elbow", "olecranon")),
    (BodyPart.HUMERUS, ("humerus", "humeri", "upper arm", "upperarm")),
    (BodyPart.SHOULDER, ("shoulder", "clavicle", "scapula", "glenoid", "acromioclavicular")),
)
_PATTERNS = tuple(
    (part, re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")s?\b"))
    for part, words in _KEYWORDS
)


def body_part_from_text(*texts: str | None) -> BodyPart:
    """Map free text (DICOM BodyPartExamined, descriptions, folder names) to a body part.

    The texts are tried in order and the first one that names a MURA body part wins, so a
    caller passes the most authoritative field first. Anything that is not a letter separates
    words ("XR_WRIST", "WRIST3VIEWS", "upper-arm"); nothing matched gives OTHER.
    """
    for text in texts:
        if not text:
            continue
        words = re.sub(r"[^a-z]+", " ", str(text).lower())
        for part, pattern in _PATTERNS:
            if pattern.search(words):
                return part
    return BodyPart.OTHER


class Split(StrEnum):
    """Where an image came from in the source (MURA publishes train/valid); None if unknown."""

    TRAIN = "train"
    VALID = "valid"
    TEST = "test"


@dataclass(frozen=True, slots=True)
class ImageRef:
    """One image (one frame of one file) of one study.

    `path` is absolute; `relpath` is relative to the archive root (what reports show).
    `label` is the study's label (MURA labels studies, not images): 1 abnormal, 0 normal,
    None unknown. `frame` selects one frame of a multi-frame DICOM (0 for single images).
    """

    path: str
    relpath: str
    image_id: str
    study_key: str
    patient_key: str
    body_part: BodyPart
    view: str | None = None
    label: int | None = None
    split: Split | None = None
    frame: int = 0

    def __post_init__(self) -> None:
        if self.label not in (None, 0, 1):
            raise ValueError(f"label must be 0, 1 or None, got {self.label!r} for {self.relpath}")
        if self.frame < 0:
            raise ValueError(f"frame must be >= 0, got {self.frame} for {self.relpath}")

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (str/int/None), ready for Arrow, JSON or a Ray dataset row."""
        row = asdict(self)
        row["body_part"] = str(self.body_part)
        row["split"] = None if self.split is None else str(self.split)
        return row

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> ImageRef:
        split = row.get("split")
        label = row.get("label")
        return cls(
            path=str(row["path"]),
            relpath=str(row["relpath"]),
            image_id=str(row["image_id"]),
            study_key=str(row["study_key"]),
            patient_key=str(row["patient_key"]),
            body_part=BodyPart(row["body_part"]),
            view=row.get("view"),
            label=None if label is None else int(label),
            split=None if split is None else Split(split),
            frame=int(row.get("frame") or 0),
        )


@dataclass(frozen=True, slots=True)
class Problem:
    """An input that could not be used, and why: becomes one quarantine row downstream."""

    path: str
    stage: str
    error_type: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Listing:
    """What a source found: the usable image references, the problems, and skipped junk.

    Every file a source looked at ends in exactly one of `refs` (possibly several refs for a
    multi-frame file), `problems`, or `junk_skipped` (macOS `._*`, `.DS_Store`, DICOMDIR...).
    """

    kind: str
    root: str
    refs: tuple[ImageRef, ...]
    problems: tuple[Problem, ...] = ()
    junk_skipped: int = 0
    notes: tuple[str, ...] = field(default=())

    def studies(self) -> dict[str, list[ImageRef]]:
        """Image references grouped by study key, in listing order."""
        out: dict[str, list[ImageRef]] = {}
        for ref in self.refs:
            out.setdefault(ref.study_key, []).append(ref)
        return out
