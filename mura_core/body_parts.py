"""The body-part vocabulary: MURA's seven study types, other named parts, and OTHER.

The recipe: a source's text (DICOM BodyPartExamined, Study / Series descriptions, folder
names, a labels CSV's `body_part`) → `body_part_from_text` (the first MURA part whose
keywords match) or `body_part_named` (that, else the source's own name, lower case, else
OTHER) → a plain string every table, threshold and report keys by; `part_order` is the one
order per-part tables print in. Archives (`mura_core.listing.ImageRef`), synthetic archives,
PACS queries, metrics and decisions all speak it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum


class BodyPart(StrEnum):
    """The seven MURA study types, plus OTHER for an image nothing names.

    A body part outside MURA's seven that a source names explicitly (a labels CSV's
    `body_part`, DICOM BodyPartExamined: `leg`, `hip`, `KNEE`) keeps its own name, lower
    case (`body_part_named`), so per-part tables never lump it silently into OTHER. Body
    parts are therefore plain strings everywhere; this enum names the ones MURA knows.
    """

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


def part_order(parts: Iterable[str]) -> list[str]:
    """Body parts in table order: MURA's seven, other named parts A–Z, then OTHER."""
    mura = [str(p) for p in MURA_BODY_PARTS]
    present = set(parts)
    named = sorted(present - set(mura) - {str(BodyPart.OTHER)})
    return [p for p in (*mura, *named, str(BodyPart.OTHER)) if p in present]


_NAME = re.compile(r"[^a-z0-9]+")
NAME_MAX = 32


def body_part_named(named: str | None, *hints: str | None) -> str:
    """The body part of an image whose source names one (`named`) and gives other text.

    A MURA part found in `named` or the `hints` (in that order) wins, as in
    `body_part_from_text` (a `BodyPart`, itself a str); otherwise `named` itself, lower
    case, runs of other characters as `_` (`"Lower Leg"` → `lower_leg`, at most 32
    characters); with no name, OTHER.
    """
    part = body_part_from_text(named, *hints)
    if part is not BodyPart.OTHER or not named:
        return part
    name = _NAME.sub("_", str(named).lower()).strip("_")[:NAME_MAX]
    return name or BodyPart.OTHER


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
