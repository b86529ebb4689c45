"""Key images: a Key Object Selection document per flagged study (`build_kos`).

The recipe: the flagged study's scored views (each instance once, in the study's order) and,
when it is written too, the study's SR, referenced from a TID 2010 Key Object Selection
(highdicom's `KeyObjectSelection`) titled (113000, DCM, "Of Interest") — the generic
key-image title of CID 7010 that IHE Key Image Note and PACS viewers list as a study's key
images (the other titles name an audience, "For Referring Provider", "For Teaching", …, or a
rejection) — observed by the model as a device, with a one-line description: the study
probability against the threshold and the model, "not for diagnosis". Its own series (9904),
UIDs deterministic like the SR's (`result_uid` "kos-series" / "kos").

`key_objects` reads one back: the SOP Instance UIDs it references.
"""

from __future__ import annotations

from functools import partial

import highdicom as hd
import pydicom

from mura_core.results.content import (
    KOS_SERIES_DESCRIPTION,
    KOS_SERIES_NUMBER,
    KOS_TITLE,
    RESULT_MANUFACTURER,
    UNREGISTERED,
    ModelIdentity,
    ResultReadError,
    StudyFinding,
)
from mura_core.results.equipment import ai_equipment, source_header
from mura_core.results.sr import device_observer
from mura_core.results.uids import result_uid


def _description(finding: StudyFinding, model: ModelIdentity) -> str:
    version = f"v{model.version}" if model.version is not None else UNREGISTERED
    return (
        f"AI flagged: p(abnormal) = {finding.probability:.3f} > threshold "
        f"{finding.threshold:.3f} ({model.name} {version}); the views it scored; "
        "not for diagnosis"
    )


def build_kos(
    finding: StudyFinding, model: ModelIdentity, sr: pydicom.Dataset | None = None
) -> hd.ko.KeyObjectSelectionDocument:
    """The flagged study's Key Object Selection: its scored views (and its SR, when given)."""
    if not finding.flagged:
        raise ValueError(f"study {finding.study_uid} is not flagged: no key object selection")
    uid = partial(result_uid, finding.study_uid, finding.instance_set, model.key)
    views = {str(i.source.SOPInstanceUID): source_header(i.source) for i in finding.images}
    referenced = [*views.values(), *([sr] if sr is not None else [])]
    content = hd.ko.KeyObjectSelection(
        document_title=KOS_TITLE,
        referenced_objects=referenced,
        observer_device_context=device_observer(model),
        description=_description(finding, model),
    )
    return hd.ko.KeyObjectSelectionDocument(
        evidence=referenced,
        content=content,
        series_instance_uid=uid("kos-series"),
        series_number=KOS_SERIES_NUMBER,
        sop_instance_uid=uid("kos"),
        instance_number=1,
        manufacturer=RESULT_MANUFACTURER,
        contributing_equipment=[ai_equipment(model)],
        series_description=KOS_SERIES_DESCRIPTION,
        manufacturer_model_name=model.name,
        software_versions=model.software_version,
    )


def key_objects(ds: pydicom.Dataset) -> tuple[str, ...]:
    """The SOP Instance UIDs a Key Object Selection document references, read by highdicom."""
    try:
        document = hd.ko.KeyObjectSelectionDocument.from_dataset(ds)
    except (AttributeError, ValueError) as exc:
        raise ResultReadError(f"not a key object selection document: {exc}") from None
    return tuple(
        str(item.referenced_sop_instance_uid) for item in document.content.get_references()
    )
