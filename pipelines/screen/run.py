"""`mura screen`: score a whole archive with Ray Data, aggregate to studies, write a report.

The recipe, top to bottom: fail fast, writing nothing (`prepare.preflight`: OUT new, empty or
a report of ours, and writable; MLflow reachable; model resolves and runs on a 3×S×S batch;
then the input listed, not empty and of the model's size) → claim OUT (`folder.claim`:
created with its marker `.mura-report`, locked for the whole run: a second run into the same
OUT fails at once with one line and changes nothing) → deliver the outbox
(`prepare.deliver`) → the scoring pass (`scores`): Ray Data: read or decode →
`map_batches(ScreenPredictor)` on an actor pool (GPUs when the cluster has them) → stream
image scores to `images.parquet` on the driver (rows without pixels: bounded memory; a
PACS's rows also bring each frame at the pictures' size, kept in OUT/.scores beside the
scores, so no instance is fetched twice) → group by study on the driver (mean, max, count;
`studies`) → flag at the threshold → drop studies a PACS did not hand every image of →
one more Ray Data pass, on actors, makes the pictures (`pictures`: CAMs, thumbnails and
Grad-CAM maps of the top flagged studies and, with `--write-back` of Secondary Captures
or heatmaps, of every flagged study) → with `--write-back`, build what
`--write-back-objects` chose (`writeback`: SR, superseding the study's earlier one;
flagged: Secondary Captures, heatmaps, key-object document; a flagged study with an image
the pass could not picture is not built, and not screened this run) → store the results
(what fails waits in the outbox) → with `--notify`, tell the worklist each study's finding
(`pipelines.results.notify`: its outbox first; what it does not take waits there) → report
files → MLflow run (`runlog`) → `summary.json`, written last, marks the report complete
(`ScreenResult`, printed by `result.format_result`).

A write that fails (a full disk, a quota) is one line naming the file, `cannot write PATH:
No space left on device`, exit 1, and leaves no temporary file of ours (`mura_core.outputs`).
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from mura_core.notify.summary import NotifySummary
from mura_core.outputs import atomic, writing
from mura_core.privacy import write_reidentify
from mura_core.records import QuarantineRow
from mura_core.screen_report import ReportStudy, write_html
from mura_core.screen_summary import (
    SUMMARY_QUARANTINE_ROWS,
    ModelSummary,
    ScreenCounts,
    ScreenSummary,
    SourceSummary,
    WriteBackFailure,
    WriteBackSummary,
    write_summary,
)
from mura_core.shards import REIDENTIFY_FILE, quarantine_table
from pipelines.monitor.screening import monitor
from pipelines.results.notify import screened_notices
from pipelines.results.writeback import (
    StudyResults,
    WriteBackChoice,
    build_results,
    store_results,
)
from pipelines.runtime.cluster import ensure_ray
from pipelines.runtime.console import console
from pipelines.screen.config import ScreenConfig, ScreenError
from pipelines.screen.folder import SUMMARY, claim
from pipelines.screen.inputs import ScreenInput, open_input
from pipelines.screen.models import ScreeningModel
from pipelines.screen.parts import FOLDER as SCORES
from pipelines.screen.pictures import Evidence, choose, make_evidence, study_pictures
from pipelines.screen.prepare import Prepared, check_fits, deliver, preflight
from pipelines.screen.result import ScreenResult
from pipelines.screen.runlog import log_screen_run
from pipelines.screen.scores import Scored, score_images
from pipelines.screen.studies import (
    aggregate,
    by_body_part,
    report_studies,
    study_table,
    unretrieved_studies,
    without,
)


def _gpus(cfg: ScreenConfig) -> int:
    available = int(ray.cluster_resources().get("GPU", 0))
    if cfg.gpus is None:
        return available
    if cfg.gpus > available:
        raise ScreenError(f"--gpus {cfg.gpus} asked for, the Ray cluster has {available}")
    return cfg.gpus


def _model_summary(model: ScreeningModel) -> ModelSummary:
    return ModelSummary(
        uri=model.uri,
        name=model.name,
        version=model.version,
        model=model.info.model,
        size=model.info.size,
        members=len(model.members),
    )


class _Laps:
    """Seconds per phase of a run, and since its start."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.phases: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = round(now - self.last, 2)
        self.last = now

    def total(self) -> float:
        return round(time.perf_counter() - self.start, 2)


def _write_tables(
    out: Path, studies: pa.Table, quarantine: list[QuarantineRow], inp: ScreenInput
) -> None:
    with atomic(out / "studies.parquet") as tmp:
        pq.write_table(studies, tmp)
    with atomic(out / "studies.csv") as tmp:
        studies.to_pandas().to_csv(tmp, index=False)
    with atomic(out / "quarantine.parquet") as tmp:
        pq.write_table(quarantine_table(quarantine), tmp)
    with writing(out / REIDENTIFY_FILE):  # its own temporary: swept by `claim` on a failure
        write_reidentify(out / REIDENTIFY_FILE, inp.reidentify)


def _start(cfg: ScreenConfig, prepared: Prepared, inp: ScreenInput) -> int:
    """Mark OUT's report as in progress (no summary), keep the log there, start (or join)
    Ray: the GPUs to use. OUT is claimed (created, marked, locked)."""
    out = prepared.out
    check_fits(prepared.model, inp)
    (out / SUMMARY).unlink(missing_ok=True)
    with writing(out / "logs"):
        console.keep_log(out, cfg.job)
    ensure_ray(cfg.address)
    return _gpus(cfg)


@dataclass(frozen=True)
class Completed:
    """The studies to report, their DICOM results (writing back), the incomplete studies
    left for the next run, and the pictures."""

    studies: pa.Table
    results: list[StudyResults]
    not_built: list[WriteBackFailure]
    incomplete: list[str]
    evidence: Evidence
    shown: list[str]  # the flagged studies the report pictures


def _complete(
    cfg: ScreenConfig,
    prepared: Prepared,
    inp: ScreenInput,
    studies: pa.Table,
    scored: Scored,
    gpus: int,
) -> Completed:
    """Drop the studies a PACS did not hand every image of; make the pictures (the report's
    first flagged studies, every flagged one when writing back) in one pass; build the
    results, dropping the flagged studies whose pictures failed (screened next run)."""
    incomplete = unretrieved_studies(scored.problems)
    studies = without(studies, incomplete)
    flagged = studies.filter(studies["flagged"])["study_key"].to_pylist()
    shown = flagged[: cfg.pictures]
    pictured = prepared.dest is not None and cfg.write_back_objects.pictures
    captured = flagged if pictured else []
    evidence = make_evidence(
        inp,
        prepared.model,
        scored.images,
        choose(scored.images, shown, captured),
        scored.parts,
        gpus=gpus,
        actors=cfg.actors,
    )
    if prepared.dest is None:
        return Completed(studies, [], [], incomplete, evidence, shown)
    choice = WriteBackChoice(cfg.write_back_objects, cfg.heatmap_format)
    results, not_built = build_results(
        inp, studies, scored.images, prepared.model, evidence, prepared.dest, choice
    )
    unbuilt = [f.study_key for f in not_built]
    shown = [k for k in shown if k not in unbuilt]
    incomplete = sorted({*incomplete, *unbuilt})
    return Completed(without(studies, unbuilt), results, not_built, incomplete, evidence, shown)


def _write_back(prepared: Prepared, done: Completed) -> WriteBackSummary | None:
    """Store the results (None when not writing back); what fails waits in the outbox."""
    if prepared.dest is None or prepared.outbox is None:
        return None
    return store_results(
        prepared.dest,
        done.results,
        prepared.outbox,
        report=prepared.out.name,
        delivered=prepared.delivered,
        not_built=done.not_built,
    )


def _notify(
    prepared: Prepared, inp: ScreenInput, studies: pa.Table, images: pa.Table, screened_at: str
) -> NotifySummary | None:
    """Tell the worklist each screened study's finding (None when not asked); what it does
    not take waits in the notify outbox, which goes first."""
    if prepared.notifier is None:
        return None
    notices = screened_notices(inp, studies, images, prepared.model, screened_at)
    return prepared.notifier.notify(notices)


def execute(cfg: ScreenConfig, prepared: Prepared, inp: ScreenInput) -> ScreenResult:
    """Score `inp` with the prepared model into the prepared OUT; see the module docstring."""
    laps = _Laps()
    out, model = prepared.out, prepared.model
    point = model.info.operating_point(cfg.threshold)  # --threshold replaces them all
    threshold = point.threshold
    screened_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    gpus = _start(cfg, prepared, inp)
    laps.lap("ray")
    scored = score_images(cfg, model, inp, out, gpus)
    images = scored.images
    laps.lap("score")
    grouped = aggregate(images)
    studies = study_table(grouped, point, model, screened_at)
    laps.lap("aggregate")
    done = _complete(cfg, prepared, inp, studies, scored, gpus)
    studies = done.studies
    pictures = study_pictures(done.evidence, images, done.shown)
    laps.lap("pictures")
    quarantine = [*inp.problems, *scored.problems]
    monitoring = monitor(model.folder, studies, images, quarantine, threshold, cfg.bands)
    _write_tables(out, studies, quarantine, inp)
    flagged = studies.filter(studies["flagged"])["study_key"].to_pylist()
    written = _write_back(prepared, done)
    if written is not None:
        laps.lap("write-back")
    told = _notify(prepared, inp, studies, images, screened_at)
    if told is not None:
        laps.lap("notify")
    summary = ScreenSummary(
        screened_at=screened_at,
        source=SourceSummary(kind=inp.kind, digest=inp.digest),
        model=_model_summary(model),
        threshold=threshold,
        counts=ScreenCounts(studies.num_rows, images.num_rows, len(flagged), len(quarantine)),
        job=cfg.job,
        experiment=cfg.experiment if prepared.tracking_uri else None,
        by_body_part=by_body_part(studies),
        quarantine=tuple(quarantine[:SUMMARY_QUARANTINE_ROWS]),
        gpus=gpus,
        images_per_s=round((inp.images - scored.kept) / max(laps.phases["score"], 1e-9), 2),
        resumed=scored.kept,
        pictures_limit_note=(
            f"pictures for the first {len(done.shown)} of {len(flagged)} flagged studies"
            if len(flagged) > len(done.shown)
            else None
        ),
        seconds=laps.total(),
        write_back=written,
        incomplete_studies=tuple(done.incomplete),
        source_notes=inp.notes,
        monitoring=monitoring,
        picture_failures=done.evidence.failures,
        notify=told,
    )
    return _finish(cfg, prepared, summary, report_studies(studies, pictures), laps)


def _finish(
    cfg: ScreenConfig,
    prepared: Prepared,
    summary: ScreenSummary,
    studies: list[ReportStudy],
    laps: _Laps,
) -> ScreenResult:
    """The HTML page, the MLflow run, then `summary.json`: the report is complete."""
    out = prepared.out
    write_html(out / "report.html", summary, studies)
    laps.lap("report")
    logged = replace(summary, phases=dict(laps.phases))
    run_id = None
    if prepared.tracking_uri:
        run_id = log_screen_run(
            logged,
            prepared.model,
            out,
            tracking_uri=prepared.tracking_uri,
            experiment=cfg.experiment,
            job=cfg.job,
            batch_size=cfg.batch_size,
        )
    laps.lap("mlflow")
    summary = replace(summary, phases=dict(laps.phases), mlflow_run_id=run_id)
    write_summary(out, summary)
    shutil.rmtree(out / SCORES, ignore_errors=True)  # the report holds every score now
    return ScreenResult(out, summary, run_id)


def run_screen(cfg: ScreenConfig) -> ScreenResult:
    """Screen `cfg.source` into `cfg.out`; whole-run problems raise before anything is
    written, then OUT is claimed (created, marked, locked) for the whole run."""
    prepared = preflight(cfg)
    inp = open_input(
        cfg.source,
        kind=cfg.kind,
        labels=cfg.labels,
        pseudonymize=cfg.pseudonymize,
        pacs=cfg.pacs,
        access=cfg.access,
    )
    check_fits(prepared.model, inp)
    with claim(prepared.out):
        return execute(cfg, deliver(prepared), inp)
