"""Recognising our own results in a PACS listing, so they never count in an instance set, and
telling them apart by kind (`own_result_kind`: "sr", "sc", "heatmap", "kos")."""

from __future__ import annotations

from pydicom.uid import (
    BasicTextSRStorage,
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    EnhancedSRStorage,
    ExtensibleSRStorage,
    KeyObjectSelectionDocumentStorage,
    ParametricMapStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
)

from mura_core.results.content import (
    HEATMAP_SERIES_DESCRIPTION,
    KOS_SERIES_DESCRIPTION,
    RESULT_MANUFACTURER,
    SC_SERIES_DESCRIPTION,
    SR_SERIES_DESCRIPTION,
)
from mura_core.results.uids import clean_uid

_SR_CLASSES = frozenset(
    {
        BasicTextSRStorage,
        EnhancedSRStorage,
        ComprehensiveSRStorage,
        Comprehensive3DSRStorage,
        ExtensibleSRStorage,
    }
)
# kind → (its SOP classes, the modalities a listing without SOP classes shows, description)
_KINDS: dict[str, tuple[frozenset[str], frozenset[str], str]] = {
    "sr": (_SR_CLASSES, frozenset({"SR"}), SR_SERIES_DESCRIPTION),
    "sc": (frozenset({SecondaryCaptureImageStorage}), frozenset({"OT"}), SC_SERIES_DESCRIPTION),
    "heatmap": (
        frozenset({SegmentationStorage, ParametricMapStorage}),
        frozenset({"SEG", "OT"}),
        HEATMAP_SERIES_DESCRIPTION,
    ),
    "kos": (
        frozenset({KeyObjectSelectionDocumentStorage}),
        frozenset({"KO"}),
        KOS_SERIES_DESCRIPTION,
    ),
}


def own_result_kind(
    modality: str | None,
    sop_class_uid: str | None,
    series_description: str | None,
    manufacturer: str | None,
) -> str | None:
    """Which of our results a PACS listing entry is ("sr", "sc", "heatmap", "kos"), or None:
    an object of that kind (by SOP class, or by modality where the listing has no SOP class)
    with its series description or made by us."""
    sop = clean_uid(sop_class_uid) if sop_class_uid else ""
    kind = (modality or "").strip().upper()
    description = (series_description or "").strip()
    by_us = (manufacturer or "").strip() == RESULT_MANUFACTURER
    candidates = [
        (name, description == ours)
        for name, (classes, modalities, ours) in _KINDS.items()
        if (sop in classes if sop else kind in modalities)
    ]
    # by description first: without a SOP class, an "OT" is a Secondary Capture or a map
    for name, described in sorted(candidates, key=lambda c: not c[1]):
        if described or by_us:
            return name
    return None


def is_own_result(
    modality: str | None,
    sop_class_uid: str | None,
    series_description: str | None,
    manufacturer: str | None,
) -> bool:
    """Whether a PACS listing entry is one of our results (`own_result_kind`)."""
    return own_result_kind(modality, sop_class_uid, series_description, manufacturer) is not None
