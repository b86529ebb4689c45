"""`--write-back`: the screening results stored into each source study, as DICOM.

The recipe, top to bottom, run on the driver after scoring (the objects are small; each
instance was fetched once, in a Ray task, and the flagged studies' pictures were made from
the pixels kept then, by the evidence pass: `pictures`):

1. deliver the outbox first (the caller does, before listing): objects an earlier run
   could not store (same UIDs, so a PACS that took them meanwhile keeps one copy);
2. ask the destination for our SRs already in each screened study (`earlier_srs`: one
   QIDO-RS or C-FIND per study, a few at once);
3. per screened study, the objects `--write-back-objects` chose (`ResultObjects`, default
   all): a TID 1500 SR (`mura_core.results.build_sr`) from the study row, its images'
   probabilities and their listed headers, naming the SR it supersedes, if any (the
   study's newest other SR of ours: its instance set changed, or another model screened
   it); for a flagged study also one Secondary Capture per scored view, Grad-CAM burned in
   (`build_secondary_captures`), one heatmap per scored view (`build_heatmaps`: a
   Segmentation over its source image, `--heatmap-format`), and a Key Object Selection
   naming the views and the SR (`build_kos`). The UIDs hash the study's whole listed
   instance set and the model, so a re-run or a retried upload makes the same objects:
   an SR already in the PACS is not sent again (it supersedes what it did then), and the
   PACS keeps one copy of the rest. A flagged study with an image the evidence pass could
   not picture, or whose earlier SRs the PACS could not be asked for, is not built
   (`WriteBackSummary.not_built`, with the reason), and not screened this run;
4. store them (STOW-RS or C-STORE, per study); a study counts as written back only when
   every object was acknowledged; what was refused goes to the outbox (owner-only
   folder), and the study is listed in the report with the reason.

A study with an image the PACS did not hand over (`retrieve_failed`) is incomplete: it is
neither reported as screened nor written back (its result would be a partial one under
the UIDs of the whole study), and a re-run or the next nightly screens it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pydicom
from pydicom.dataset import Dataset

from mura_core.archive import pacs_destination
from mura_core.pacs.address import PacsError
from mura_core.pacs.client import Pacs, PacsOptions
from mura_core.results import (
    HeatmapFormat,
    ModelIdentity,
    ResultObjects,
    ScPicture,
    StudyFinding,
    build_heatmaps,
    build_kos,
    build_secondary_captures,
    build_sr,
    result_uid,
)
from mura_core.results.history import StoredResult, earlier_srs, superseded
from mura_core.screen_summary import PictureFailure, WriteBackFailure, WriteBackSummary
from pipelines.results.findings import model_identity, pacs_instance, study_findings
from pipelines.results.outbox import MarkedOutbox, OutboxItem
from pipelines.runtime.console import console
from pipelines.screen.inputs import ScreenInput
from pipelines.screen.models import ScreeningModel
from pipelines.screen.pictures import Evidence

OUTBOX_ENV = "MURA_OUTBOX"


def destination(source: object, dest: str, options: PacsOptions) -> Pacs:
    """The PACS results go to (DEST, or the source PACS when DEST is empty), checked.
    The source must be a PACS: the results carry its listed headers (patient, study)."""
    pacs = options.connect(pacs_destination(str(source), dest))
    pacs.check()
    return pacs


def default_outbox(pacs: Pacs) -> Path:
    """Per destination, under $MURA_OUTBOX or ~/.local/state/mura/outbox."""
    root = Path(os.environ.get(OUTBOX_ENV) or "~/.local/state/mura/outbox").expanduser()
    return root / hashlib.sha256(str(pacs.address).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StudyResults:
    """One study's objects to store, and its report key (a pseudonym): how many of each
    kind, and whether its SR supersedes an earlier one."""

    study_key: str
    objects: tuple[Dataset, ...]
    captures: int = 0
    reports: int = 0  # 0: not chosen, or already in the PACS
    heatmaps: int = 0
    key_objects: int = 0
    supersedes: bool = False


@dataclass(frozen=True)
class WriteBackChoice:
    """What a write-back builds: the objects (`--write-back-objects`), the heatmap's
    encoding (`--heatmap-format`)."""

    objects: ResultObjects = ResultObjects()
    heatmap: HeatmapFormat = HeatmapFormat.BINARY


@dataclass(frozen=True)
class Delivered:
    """What delivering the outbox did: objects stored, and per study the report it was
    screened in (nightly records those studies without screening them again)."""

    objects: int = 0
    studies: dict[str, str] = field(default_factory=dict)  # study key → report name


class Outbox(MarkedOutbox):
    """Results waiting for a destination (`pipelines.results.outbox`), one owner-only folder
    per study: its objects as Part 10 files and `study.json` (its report key, the report it
    was screened in). The folder carries its marker (`.mura-outbox`): delivery stores and
    deletes study folders, so a folder holding anything else (`--outbox` naming a folder of
    the user's) is refused by `check`, before any work."""

    MARKER = ".mura-outbox"
    MARKER_TEXT = "mura outbox: results waiting for a PACS\n"
    META = "study.json"

    def put(self, study_key: str, report: str, datasets: Sequence[Dataset]) -> None:
        files = [
            (hashlib.sha256(str(ds.SOPInstanceUID).encode()).hexdigest() + ".dcm", _part10(ds))
            for ds in datasets
        ]
        self.put_item(study_key, files, json.dumps({"study_key": study_key, "report": report}))

    def studies(self) -> list[Path]:
        return [item.folder for item in self.items()]

    def pending(self) -> int:
        """Objects waiting."""
        return sum(len(item.files("*.dcm")) for item in self.items())

    def deliver(self, pacs: Pacs) -> Delivered:
        """Store what waits, study by study; a study's folder goes once all its objects
        were acknowledged, else it stays for the next run."""

        def store(item: OutboxItem) -> tuple[str, str, int] | None:
            paths = item.files("*.dcm")
            datasets = [pydicom.dcmread(io.BytesIO(p.read_bytes())) for p in paths]
            outcomes = pacs.store(datasets) if datasets else []
            if not all(o.ok for o in outcomes) or len(outcomes) != len(datasets):
                return None
            meta = json.loads(item.meta)
            return meta["study_key"], meta["report"], len(datasets)

        taken = self.deliver_items(store)
        return Delivered(sum(n for _, _, n in taken), {key: report for key, report, _ in taken})


def _part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _captures(
    inp: ScreenInput, evidence: Evidence, findings: list[tuple[str, StudyFinding]]
) -> dict[str, list[ScPicture] | PictureFailure]:
    """Per flagged study: a picture (pixels and Grad-CAM, from the evidence pass) of every
    scored image, or the failure of the first image that has none."""
    assert inp.rows is not None
    by_sop_frame = {(pacs_instance(r).sop, r.frame): r.image_id for r in inp.rows}
    out: dict[str, list[ScPicture] | PictureFailure] = {}
    for key, finding in findings:
        if not finding.flagged:
            continue
        pictures: list[ScPicture] | PictureFailure = []
        for image in finding.images:
            image_id = by_sop_frame[(str(image.source.SOPInstanceUID), image.frame)]
            made = evidence.pictures.get(image_id)
            if made is None or made.pixels is None or made.cam is None:
                pictures = evidence.failure(image_id) or PictureFailure(
                    key, image_id, "missing", "no picture was asked for"
                )
                break
            pictures.append(
                ScPicture(image.source, made.pixels, made.cam, image.probability, image.frame)
            )
        out[key] = pictures
    return out


def _study_results(
    key: str,
    finding: StudyFinding,
    model: ModelIdentity,
    pictures: list[ScPicture],
    earlier: list[StoredResult],
    choice: WriteBackChoice,
) -> StudyResults:
    """One study's chosen objects (see the module docstring, step 3)."""
    chosen = choice.objects
    sr_uid = result_uid(finding.study_uid, finding.instance_set, model.key, "sr")
    already = any(r.location.sop == sr_uid for r in earlier)  # an identical re-run
    before = None if already else superseded(earlier, sr_uid)
    previous = [before.reference()] if before is not None else []
    sr = build_sr(finding, model, previous) if chosen.sr else None
    reports = [sr] if sr is not None and not already else []
    captures, heatmaps, kos = [], [], []
    if finding.flagged:
        if chosen.sc:
            captures = build_secondary_captures(finding, model, pictures)
        if chosen.heatmap:
            heatmaps = build_heatmaps(finding, model, pictures, choice.heatmap)
        if chosen.kos:
            kos = [build_kos(finding, model, sr)]
    return StudyResults(
        key,
        (*reports, *captures, *heatmaps, *kos),
        captures=len(captures),
        reports=len(reports),
        heatmaps=len(heatmaps),
        key_objects=len(kos),
        supersedes=bool(reports) and before is not None,
    )


def build_results(
    inp: ScreenInput,
    studies: pa.Table,
    images: pa.Table,
    model: ScreeningModel,
    evidence: Evidence,
    dest: Pacs,
    choice: WriteBackChoice = WriteBackChoice(),
) -> tuple[list[StudyResults], list[WriteBackFailure]]:
    """Every screened study's chosen objects (the flagged ones' pictures from the evidence
    pass; its SR superseding our newest earlier one in `dest`); and the flagged studies not
    built, with the reason (an image without a picture: screened again next run)."""
    identity = model_identity(model)
    findings = study_findings(inp, studies, images)
    pictures = _captures(inp, evidence, findings) if choice.objects.pictures else {}
    earlier = earlier_srs(dest, (f.study_uid for _, f in findings)) if choice.objects.sr else {}
    out, unbuilt = [], []
    for key, finding in findings:
        captured = pictures.get(key, [])
        found = earlier.get(finding.study_uid, [])
        if isinstance(captured, PictureFailure):
            reason = f"no picture of image {captured.image_id}: {captured.reason}"
            unbuilt.append(WriteBackFailure(key, reason))
        elif isinstance(found, PacsError):
            unbuilt.append(WriteBackFailure(key, f"which SR it supersedes is unknown: {found}"))
        else:
            out.append(_study_results(key, finding, identity, captured, found, choice))
    return out, unbuilt


def store_results(
    pacs: Pacs,
    results: list[StudyResults],
    outbox: Outbox,
    *,
    report: str,
    delivered: Delivered | None = None,
    not_built: Sequence[WriteBackFailure] = (),
) -> WriteBackSummary:
    """Store per study; a study's refused objects wait in the outbox (with the report it
    was screened in), and the study is listed as a failure (beside those `not_built`)."""
    bar = console.progress("write-back", len(results), "studies")
    failed: list[WriteBackFailure] = []
    stored: list[StudyResults] = []
    for study in results:
        outcomes = pacs.store(study.objects) if study.objects else []
        refused = [o.error for o in outcomes if not o.ok]
        if refused or len(outcomes) != len(study.objects):
            outbox.put(study.study_key, report, study.objects)
            failed.append(WriteBackFailure(study.study_key, refused[0] if refused else "no answer"))
        else:
            stored.append(study)
        bar.advance(1)
    bar.close()
    return WriteBackSummary(
        destination=str(pacs.address),
        studies=len(stored),
        reports=sum(s.reports for s in stored),
        captures=sum(s.captures for s in stored),
        heatmaps=sum(s.heatmaps for s in stored),
        key_objects=sum(s.key_objects for s in stored),
        versions=sum(s.supersedes for s in stored),
        failed=tuple(failed),
        outbox_delivered=delivered.objects if delivered else 0,
        outbox_pending=outbox.pending(),
        not_built=tuple(not_built),
    )
