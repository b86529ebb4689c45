"""Recognising our own results in a PACS listing, so they never count in an instance set."""

from __future__ import annotations

from pydicom.uid import (
    BasicTextSRStorage,
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    EnhancedSRStorage,
    ExtensibleSRStorage,
    SecondaryCaptureImageStorage,
)

from mura_core.results.content import (
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


def is_own_result(
    modality: str | None,
    sop_class_uid: str | None,
    series_description: str | None,
    manufacturer: str | None,
) -> bool:
    """Whether a PACS listing entry is one of our results: an SR or SC (by SOP class, or by
    modality where the listing has no SOP class) with our series description or made by us."""
    sop = clean_uid(sop_class_uid) if sop_class_uid else ""
    kind = (modality or "").strip().upper()
    description = (series_description or "").strip()
    by_us = (manufacturer or "").strip() == RESULT_MANUFACTURER
    is_sr = sop in _SR_CLASSES if sop else kind == "SR"
    is_sc = sop == SecondaryCaptureImageStorage if sop else kind == "OT"
    if is_sr:
        return description == SR_SERIES_DESCRIPTION or by_us
    if is_sc:
        return description == SC_SERIES_DESCRIPTION or by_us
    return False
