"""`mura screen`: score a whole archive with Ray Data, aggregate to studies, write a report.

The recipe, top to bottom: fail fast, writing nothing (`preflight`: OUT new, empty or a
report of ours, and writable; MLflow reachable; model resolves and runs on a 3×S×S batch;
then the input listed, not empty and of the model's size) → claim OUT (`claim`: created
with its marker `.mura-report`, locked for the whole run: a second run into the same OUT
fails at once with one line and changes nothing) → deliver the outbox → Ray Data: read or
decode → `map_batches(ScreenPredictor)` on an actor pool (GPUs when the cluster has them) → stream
image scores to `images.parquet` on the driver (rows without pixels: bounded memory; a
PACS's rows also bring each frame at the pictures' size, kept in OUT/.scores beside the
scores, so no instance is fetched twice) → group by study on the driver (mean, max, count;
`studies`) → flag at the threshold → drop studies a PACS did not hand every image of →
one more Ray Data pass, on actors, makes the pictures (`pictures`: CAMs, thumbnails and
Secondary Capture pixels of the top flagged studies and, with `--write-back`, of every
flagged study) → with `--write-back`, build their SR and Secondary Captures (`writeback`;
a flagged study with an image the pass could not picture is not built, and not screened
this run) → store the results (what fails waits in the outbox) → report files → MLflow
run (`runlog`) → `summary.json`, written last, marks the report complete.

A write that fails (a full disk, a quota) is one line naming the file, `cannot write PATH:
No space left on device`, exit 1, and leaves no temporary file of ours (`mura_core.outputs`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data

from mura_core.archive import AccessPolicy, ArchiveSource
from mura_core.errors import ConfigError, MuraError
from mura_core.monitoring.drift import Bands
from mura_core.outputs import atomic, check_writable, claimed, is_empty, writing
from mura_core.pacs.client import Pacs, PacsOptions
from mura_core.privacy import write_reidentify
from mura_core.records import QuarantineRow, ScoredImage
from mura_core.schema import arrow_schema
from mura_core.screen_report import ReportStudy, write_html
from mura_core.screen_summary import (
    SUMMARY_FILE,
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
from pipelines.registry.tracking import check_tracking, resolve_tracking_uri, use_tracking
from pipelines.results.writeback import (
    Delivered,
    Outbox,
    StudyResults,
    build_results,
    default_outbox,
    destination,
    store_results,
)
from pipelines.runtime.cluster import data_context, ensure_ray
from pipelines.runtime.console import console
from pipelines.screen.inputs import ScreenInput, open_input
from pipelines.screen.models import ScreeningModel, resolve_screening_model
from pipelines.screen.parts import FOLDER as SCORES
from pipelines.screen.parts import Earlier, ScoreKey, ScoreParts, bundle_digest, scored_and_problems
from pipelines.screen.pictures import Evidence, choose, kept_size, make_evidence, study_pictures
from pipelines.screen.runlog import log_screen_run
from pipelines.screen.scoring import ScreenPredictor
from pipelines.screen.studies import (
    aggregate,
    by_body_part,
    report_studies,
    study_table,
    unretrieved_studies,
    without,
)
from pipelines.shards.predict import bundle_bytes, predict

MARKER = ".mura-report"
MARKER_TEXT = "mura screening report\n"
SUMMARY = SUMMARY_FILE
SCORED_SCHEMA = arrow_schema(ScoredImage)  # images.parquet: the actor's rows less their failure


class ScreenError(MuraError):
    """A whole-run problem found before any work (or a broken invariant after it)."""


@dataclass(frozen=True)
class ScreenConfig:
    """One screening run; the CLI builds it from flags."""

    source: Path | str | ArchiveSource  # a folder, or a PACS address (dicomweb+http://…)
    out: Path
    models: tuple[str, ...]
    kind: str | None = None
    labels: Path | None = None
    threshold: float | None = None
    batch_size: int = 32
    gpus: int | None = None  # None: one actor per GPU of the cluster, CPU when it has none
    actors: int | None = None
    address: str | None = None
    tracking_uri: str | None = None
    experiment: str = "mura-screen"
    pictures: int = 12
    pseudonymize: str = "always"
    track: bool = True
    job: str = "screen"
    pacs: PacsOptions = field(default_factory=PacsOptions)  # a PACS source: how to use it
    write_back: str | None = None  # store results as DICOM: a PACS address, "" = the source
    outbox: Path | None = None  # results not yet stored (default: per destination)
    checkpoint_every: int = 1000  # image scores written to OUT/.scores every N (resumable)
    bands: Bands = field(default_factory=Bands)  # when a monitoring figure alerts
    access: AccessPolicy = AccessPolicy()  # a folder source: links, read cap

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.gpus is not None and self.gpus < 0:
            raise ConfigError(f"--gpus must be >= 0, got {self.gpus}")
        if self.checkpoint_every < 1:
            raise ConfigError(f"--checkpoint-every must be >= 1, got {self.checkpoint_every}")


@dataclass(frozen=True)
class Prepared:
    """What the fail-fast checks produced: the model, the tracking URI, the output folder."""

    model: ScreeningModel
    tracking_uri: str | None
    out: Path
    dest: Pacs | None = None  # --write-back: the checked destination
    outbox: Outbox | None = None  # its outbox, already delivered once
    delivered: Delivered | None = None


@dataclass(frozen=True)
class ScreenResult:
    out: Path
    summary: ScreenSummary
    run_id: str | None

    @property
    def counts(self) -> ScreenCounts:
        return self.summary.counts


def check_out(out: Path) -> Path:
    """OUT must be new, empty, or a report of ours (replaced), and writable: checked
    without writing anything (`claim` creates it once every check has passed)."""
    out = out.expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ScreenError(f"output {out} exists and is not a folder")
    if out.is_dir() and not is_empty(out) and not (out / MARKER).is_file():
        raise ScreenError(
            f"output {out} is not empty and holds no screening report: choose a new or "
            "empty folder (nothing is overwritten)"
        )
    check_writable(out, ScreenError)
    return out


def preflight(cfg: ScreenConfig) -> Prepared:
    """Every whole-run check that needs no input (OUT, MLflow, the model, the write-back
    destination), writing nothing: the outbox is delivered by `deliver`, under the lock."""
    out = check_out(cfg.out)
    uri = None
    if cfg.track or any(s.startswith(("models:", "runs:", "@")) for s in cfg.models):
        uri = resolve_tracking_uri(cfg.tracking_uri)
        check_tracking(uri)
        use_tracking(uri)
    prepared = Prepared(resolve_screening_model(cfg.models), uri if cfg.track else None, out)
    if cfg.write_back is None:
        return prepared
    dest = destination(cfg.source, cfg.write_back, cfg.pacs)
    outbox = Outbox(cfg.outbox or default_outbox(dest)).check()
    return replace(prepared, dest=dest, outbox=outbox)


def claim(out: Path) -> contextlib.AbstractContextManager[Path]:
    """OUT created with its marker and locked for the block (a second run: one line)."""
    return claimed(out, MARKER, MARKER_TEXT, "mura screen run", ScreenError)


def deliver(prepared: Prepared) -> Prepared:
    """With --write-back: what waits in the outbox, stored first (it writes: under the
    lock, after every check)."""
    if prepared.dest is None or prepared.outbox is None:
        return prepared
    return replace(prepared, delivered=prepared.outbox.deliver(prepared.dest))


def check_fits(model: ScreeningModel, inp: ScreenInput) -> None:
    """Shards must be at the model's input size (raw archives are decoded to it)."""
    if inp.shard_size is not None and inp.shard_size != model.info.size:
        raise ScreenError(
            f"model {model.label} takes {model.info.size}px images but the shards at "
            f"{inp.root} are {inp.shard_size}px: re-ingest with --size {model.info.size}, "
            "or screen the raw archive"
        )


def _gpus(cfg: ScreenConfig) -> int:
    available = int(ray.cluster_resources().get("GPU", 0))
    if cfg.gpus is None:
        return available
    if cfg.gpus > available:
        raise ScreenError(f"--gpus {cfg.gpus} asked for, the Ray cluster has {available}")
    return cfg.gpus


def _stream_scores(
    cfg: ScreenConfig, model: ScreeningModel, inp: ScreenInput, parts: ScoreParts, gpus: int
) -> int:
    """Run the Ray Data pipeline over `inp`, writing every row back to the parts as it
    arrives (rows without pixels: bounded memory); the number of rows."""
    from pipelines.screen.inputs import input_dataset

    with data_context():
        ds = input_dataset(inp, model.info.size, keep=kept_size(inp, model.info.size))
    scored = predict(
        ds,
        bundle_bytes(model.folder),
        batch_size=cfg.batch_size,
        actors=cfg.actors or (gpus or None),
        gpus_per_actor=1.0 if gpus else 0.0,
        predictor=ScreenPredictor,
    )
    n = 0
    bar = console.progress("scoring", inp.images, "images")
    for batch in scored.iter_batches(batch_format="pyarrow", batch_size=None):
        parts.add(batch, inp.content)
        n += batch.num_rows
        bar.advance(batch.num_rows)
    parts.flush()
    bar.close()
    return n


def _resume(
    cfg: ScreenConfig, model: ScreeningModel, inp: ScreenInput, out: Path
) -> tuple[ScoreParts, Earlier]:
    """OUT's score parts, and the rows an interrupted run left that still hold."""
    key = ScoreKey(
        model=bundle_digest(bundle_bytes(model.folder)),
        pseudonymize=cfg.pseudonymize,
        kind=inp.kind,
        root=str(inp.root),
        pixels=kept_size(inp, model.info.size) or 0,
    )
    parts = ScoreParts(out, key, every=cfg.checkpoint_every)
    earlier = parts.earlier(inp.content)
    if earlier.note:
        console.print(earlier.note)
    if earlier.rows.num_rows:
        console.print(
            f"resuming: {earlier.rows.num_rows} of {inp.images} images were scored by an "
            f"interrupted run into {out} and are kept; scoring the other "
            f"{inp.images - earlier.rows.num_rows}"
            + (
                f" ({earlier.dropped} earlier scores dropped: image gone or changed)"
                if earlier.dropped
                else ""
            )
        )
    return parts, earlier


@dataclass(frozen=True)
class Scored:
    """What scoring left: every scored image's row, the quarantined ones, the number kept
    from an interrupted run, and OUT's parts (the pixels a PACS's pictures are made from)."""

    images: pa.Table
    problems: list[QuarantineRow]
    kept: int
    parts: ScoreParts


def _scores(
    cfg: ScreenConfig, model: ScreeningModel, inp: ScreenInput, out: Path, gpus: int
) -> Scored:
    """Score what has no score yet in OUT; every image's row (kept or new), sorted, goes to
    images.parquet."""
    parts, earlier = _resume(cfg, model, inp, out)
    todo = inp.without(earlier.ids)
    n = _stream_scores(cfg, model, todo, parts, gpus) if todo.images else 0
    if n != todo.images or earlier.rows.num_rows + n != inp.images:
        raise ScreenError(
            f"accounting failed: {inp.images} images in, {earlier.rows.num_rows} kept from an "
            f"interrupted run + {n} scored or quarantined now"
        )
    rows = pa.concat_tables([earlier.rows, parts.this_run()])
    images, failed = scored_and_problems(rows)
    images = images.select(SCORED_SCHEMA.names).cast(SCORED_SCHEMA)
    with atomic(out / "images.parquet") as tmp:
        pq.write_table(images, tmp, compression="zstd")
    problems = [
        QuarantineRow.decode_failure(row, row["error_type"], row["reason"])
        for row in failed.drop(["prob", "content"]).to_pylist()
    ]
    return Scored(images, problems, earlier.rows.num_rows, parts)


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
    captured = flagged if prepared.dest is not None else []
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
    results, not_built = build_results(inp, studies, scored.images, prepared.model, evidence)
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


def execute(cfg: ScreenConfig, prepared: Prepared, inp: ScreenInput) -> ScreenResult:
    """Score `inp` with the prepared model into the prepared OUT; see the module docstring."""
    laps = _Laps()
    out, model = prepared.out, prepared.model
    threshold = model.info.threshold if cfg.threshold is None else cfg.threshold
    screened_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    gpus = _start(cfg, prepared, inp)
    laps.lap("ray")
    scored = _scores(cfg, model, inp, out, gpus)
    images = scored.images
    laps.lap("score")
    grouped = aggregate(images)
    # the model's per-part thresholds, unless --threshold overrides them all
    parts = model.info.part_thresholds if cfg.threshold is None else None
    studies = study_table(grouped, threshold, model, screened_at, parts)
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


def format_result(result: ScreenResult) -> str:
    """The one-screen summary printed at the end of `mura screen`."""
    s, c, m = result.summary, result.summary.counts, result.summary.model
    lines = [
        f"report: {result.out / 'report.html'}",
        f"model {m.name}"
        + (f" v{m.version}" if m.version else "")
        + f" ({m.model}, {m.size}px), threshold {s.threshold:.3f}, "
        f"{'GPU x' + str(s.gpus) if s.gpus else 'CPU'}",
        f"{c.studies} studies, {c.images} images scored, {c.quarantined} quarantined, "
        f"{s.seconds or 0:.1f}s ({s.images_per_s or 0:.1f} images/s scoring)",
        f"flagged {c.flagged} of {c.studies} studies",
        *(
            [f"{s.resumed} images' scores kept from an interrupted run into this folder"]
            if s.resumed
            else []
        ),
        f"{'body part':<12} {'studies':>8} {'images':>7} {'flagged':>8}",
    ]
    for part, v in s.by_body_part.items():
        lines.append(f"{part:<12} {v.studies:>8} {v.images:>7} {v.flagged:>8}")
    if s.incomplete_studies:
        lines.append(
            f"{len(s.incomplete_studies)} studies not screened: some of their images could not "
            "be retrieved (quarantine: retrieve_failed) or their results built; run again to "
            "screen them"
        )
    if s.picture_failures:
        first = s.picture_failures[0]
        lines.append(
            f"{len(s.picture_failures)} scored images have no pictures (first: "
            f"{first.image_id}: {first.reason})"
        )
    if (wb := s.write_back) is not None:
        lines.append(
            f"written back to {wb.destination}: {wb.studies} studies ({wb.reports} SR, "
            f"{wb.captures} Secondary Captures)"
            + (f", {len(wb.failed)} not stored (in the outbox)" if wb.failed else "")
            + (f", {wb.outbox_delivered} delivered from the outbox" if wb.outbox_delivered else "")
            + (f", {len(wb.not_built)} flagged studies not built" if wb.not_built else "")
        )
    if (mon := s.monitoring) is not None:
        lines.append(
            f"ALERT: {mon.alert}"
            if mon.alert
            else "monitoring: in band against the model's reference"
            if mon.reference
            else "monitoring: the model carries no reference (trained before references were "
            "saved): figures logged, no drift measured"
        )
    if result.run_id:
        lines.append(f"MLflow run {result.run_id} (experiment {s.experiment or 'mura-screen'})")
    lines.append(f"re-identification map (not logged): {result.out / REIDENTIFY_FILE}")
    return "\n".join(lines)
