"""A screening's study findings with the real identifiers behind its pseudonyms: what the
results written back (`writeback`) and the worklist's notices (`notify`) are made of.

A PACS source's listing keeps each instance's header (`ScreenInput.headers`, by SOP
Instance UID); `study_findings` joins the study rows and image scores (keyed by
pseudonyms) back to them: per screened study a `StudyFinding` with its StudyInstanceUID,
its scored images' headers and probabilities, and its whole listed instance set (what
result UIDs and notice control IDs hash). `model_identity` names the model as the results
do. PACS sources only: a folder's rows have no headers.
"""

from __future__ import annotations

import pyarrow as pa

from mura_core.locations import PacsInstance
from mura_core.records import ImageRow
from mura_core.results import ImageFinding, ModelIdentity, StudyFinding
from pipelines.screen.inputs import ScreenInput
from pipelines.screen.models import ScreeningModel


def model_identity(model: ScreeningModel) -> ModelIdentity:
    """The model as the results name it: a registered single model by its version URI
    (`models:/NAME/VERSION`, which an alias like @champion stops pointing at later)."""
    uri = model.uri
    if model.version and len(model.members) == 1 and uri.startswith("models:/"):
        uri = f"models:/{model.name}/{model.version}"
    return ModelIdentity(name=model.name, version=model.version, uri=uri)


def pacs_instance(row: ImageRow) -> PacsInstance:
    """A listed row's PACS instance (write-back screens PACS sources only)."""
    if not isinstance(row.location, PacsInstance):
        raise TypeError(f"not a PACS instance: {row.relpath}")
    return row.location


def study_findings(
    inp: ScreenInput, studies: pa.Table, images: pa.Table
) -> list[tuple[str, StudyFinding]]:
    """(study key, finding) per screened study, with the real UIDs behind the pseudonyms."""
    assert inp.rows is not None and inp.headers is not None
    rows = {r.image_id: r for r in inp.rows}
    listed: dict[str, list[str]] = {}
    for r in inp.rows:
        listed.setdefault(r.study_key, []).append(pacs_instance(r).sop)
    scored: dict[str, list[ImageFinding]] = {}
    for image_id, key, prob in zip(
        images["image_id"].to_pylist(),
        images["study_key"].to_pylist(),
        images["prob"].to_pylist(),
        strict=True,
    ):
        row = rows[image_id]
        header = inp.headers[pacs_instance(row).sop]
        scored.setdefault(key, []).append(ImageFinding(header, float(prob), row.frame))
    out = []
    for s in studies.select(["study_key", "mean_prob", "threshold", "flagged"]).to_pylist():
        found = tuple(scored[s["study_key"]])
        finding = StudyFinding(
            study_uid=str(found[0].source.StudyInstanceUID),
            probability=float(s["mean_prob"]),
            threshold=float(s["threshold"]),
            flagged=bool(s["flagged"]),
            images=found,
            instance_uids=tuple(listed[s["study_key"]]),
        )
        out.append((s["study_key"], finding))
    return out
