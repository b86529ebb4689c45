"""`mura screen`: score a whole archive with Ray Data, aggregate to studies, write a report.

The recipe, top to bottom: fail fast (OUT writable, MLflow reachable, model resolves and
runs on a 3×S×S batch, input not empty and of the model's size) → Ray Data: read or decode
→ `map_batches(ScreenPredictor)` on an actor pool (GPUs when the cluster has them) → stream
image scores to `images.parquet` on the driver (rows without pixels: bounded memory) → Ray
Data groupby/aggregate to studies (mean, max, count) → flag at the threshold → pictures and
CAMs of the top flagged studies → report files → MLflow run → `summary.json`, written last,
marks the report complete.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import mlflow
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
import ray.data
from mlflow.tracking import MlflowClient
from ray.data.aggregate import Count, Max, Mean
from ray.data.context import ShuffleStrategy

from mura_core.errors import ConfigError, MuraError
from mura_core.pacs.client import Pacs, PacsOptions, RetrieveError
from mura_core.privacy import write_reidentify
from mura_core.records import (
    SUMMARY_QUARANTINE_ROWS,
    ModelSummary,
    PartCounts,
    QuarantineRow,
    ScreenCounts,
    ScreenSummary,
    SourceSummary,
)
from mura_core.screen_report import SUMMARY_FILE, ReportStudy, write_html, write_summary
from mura_core.shards import make_writable_dir, quarantine_table

from ..console import console
from ..predict import bundle_bytes, predict
from ..runtime import cluster_cpus, data_context, ensure_ray
from ..scoring import IMAGE_SCHEMA, ScreenPredictor
from ..tracking import (
    check_tracking,
    ensure_experiment,
    git_commit,
    resolve_tracking_uri,
    use_tracking,
)
from .inputs import ScreenInput, open_input
from .models import ScreeningModel, resolve_screening_model
from .pictures import study_pictures
from .writeback import (
    Delivered,
    Outbox,
    build_results,
    default_outbox,
    destination,
    store_results,
)

MARKER = ".mura-report"
SUMMARY = SUMMARY_FILE
REPORT_FILES = (
    "studies.parquet",
    "studies.csv",
    "images.parquet",
    "quarantine.parquet",
    "report.html",
)
SCORED_SCHEMA = pa.schema([f for f in IMAGE_SCHEMA if f.name not in ("error_type", "reason")])
STUDY_COLUMNS = [
    "study_key",
    "patient_key",
    "body_part",
    "images",
    "mean_prob",
    "max_prob",
    "flagged",
    "label",
    "model",
    "model_version",
    "threshold",
    "screened_at",
]


class ScreenError(MuraError):
    """A whole-run problem found before any work (or a broken invariant after it)."""


@dataclass(frozen=True)
class ScreenConfig:
    """One screening run; the CLI builds it from flags."""

    source: Path | str  # a folder, or a PACS address (dicomweb+http://…, dimse://…)
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

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.gpus is not None and self.gpus < 0:
            raise ConfigError(f"--gpus must be >= 0, got {self.gpus}")


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
    """OUT must be new, empty, or an earlier report (replaced); and writable."""
    out = out.expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ScreenError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ScreenError(
            f"output {out} is not empty and holds no screening report: choose a new or "
            "empty folder (nothing is overwritten)"
        )
    try:
        make_writable_dir(out)
    except OSError as exc:
        raise ScreenError(f"cannot write to {out}: {exc.strerror or exc}") from exc
    return out


def preflight(cfg: ScreenConfig) -> Prepared:
    """Every whole-run check that needs no input: OUT, MLflow, the model."""
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
    outbox = Outbox(cfg.outbox or default_outbox(dest))
    return replace(prepared, dest=dest, outbox=outbox, delivered=outbox.deliver(dest))


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
    cfg: ScreenConfig, model: ScreeningModel, inp: ScreenInput, out: Path, gpus: int
) -> tuple[int, list[QuarantineRow]]:
    """Run the Ray Data pipeline, writing scored rows to images.parquet as they arrive."""
    from .inputs import input_dataset

    with data_context():
        ds = input_dataset(inp, model.info.size)
    scored = predict(
        ds,
        bundle_bytes(model.folder),
        batch_size=cfg.batch_size,
        actors=cfg.actors or (gpus or None),
        gpus_per_actor=1.0 if gpus else 0.0,
        predictor=ScreenPredictor,
        predictor_kwargs={"pseudonymizer": inp.pseudonymizer},
    )
    problems: list[QuarantineRow] = []
    n = 0
    tmp = out / ".images.parquet.tmp"
    bar = console.progress("scoring", inp.images, "images")
    with pq.ParquetWriter(tmp, SCORED_SCHEMA, compression="zstd") as writer:
        for batch in scored.iter_batches(batch_format="pyarrow", batch_size=None):
            ok = pc.is_valid(batch["prob"])
            good = batch.filter(ok).select(SCORED_SCHEMA.names)
            if good.num_rows:
                writer.write_table(good.cast(SCORED_SCHEMA))
                n += good.num_rows
            for row in batch.filter(pc.invert(ok)).to_pylist():
                problems.append(QuarantineRow.decode_failure(row, row["error_type"], row["reason"]))
            bar.advance(batch.num_rows)
    bar.close()
    tmp.replace(out / "images.parquet")
    return n, problems


def _aggregate(images_path: Path, scored: int) -> pa.Table:
    """Study rows with Ray Data's groupby: images, mean and max probability, label."""
    if scored == 0:
        return pa.table(
            {
                "study_key": pa.array([], pa.string()),
                "patient_key": pa.array([], pa.string()),
                "body_part": pa.array([], pa.string()),
                "images": pa.array([], pa.int64()),
                "mean_prob": pa.array([], pa.float64()),
                "max_prob": pa.array([], pa.float64()),
                "label": pa.array([], pa.int8()),
            }
        )
    # Sort-based shuffle: Ray's default hash shuffle starts aggregator actors, measured
    # ~5 s against ~0.8 s here for a few thousand rows (image rows carry no pixels).
    with data_context(shuffle_strategy=ShuffleStrategy.SORT_SHUFFLE_PULL_BASED):
        images = ray.data.read_parquet(str(images_path))
    grouped = images.groupby(
        ["study_key", "patient_key", "body_part"],
        num_partitions=max(1, min(cluster_cpus(), -(-scored // 100_000))),
    ).aggregate(
        Count(alias_name="images"),
        Mean("prob", alias_name="mean_prob"),
        Max("prob", alias_name="max_prob"),
        Max("label", alias_name="label"),
    )
    return pa.Table.from_pandas(grouped.to_pandas(), preserve_index=False)


def _study_table(
    grouped: pa.Table, threshold: float, model: ScreeningModel, screened_at: str
) -> pa.Table:
    mean = grouped["mean_prob"].to_numpy()
    order = sorted(range(len(mean)), key=lambda i: (not mean[i] > threshold, -mean[i]))
    grouped = grouped.take(pa.array(order, type=pa.int64()))
    n = grouped.num_rows
    label = pc.cast(grouped["label"], pa.int8()) if n else pa.array([], pa.int8())
    return pa.table(
        {
            "study_key": grouped["study_key"],
            "patient_key": grouped["patient_key"],
            "body_part": grouped["body_part"],
            "images": pc.cast(grouped["images"], pa.int64()),
            "mean_prob": grouped["mean_prob"],
            "max_prob": grouped["max_prob"],
            "flagged": pc.greater(grouped["mean_prob"], threshold),
            "label": label,
            "model": pa.array([model.name] * n, pa.string()),
            "model_version": pa.array([model.version] * n, pa.string()),
            "threshold": pa.array([threshold] * n, pa.float64()),
            "screened_at": pa.array([screened_at] * n, pa.string()),
        }
    ).select(STUDY_COLUMNS)


def _by_body_part(studies: pa.Table) -> dict[str, PartCounts]:
    out: dict[str, PartCounts] = {}
    for part, images, flagged in zip(
        studies["body_part"].to_pylist(),
        studies["images"].to_pylist(),
        studies["flagged"].to_pylist(),
        strict=True,
    ):
        c = out.get(part, PartCounts())
        out[part] = PartCounts(c.studies + 1, c.images + images, c.flagged + int(flagged))
    return dict(sorted(out.items()))


def _report_studies(studies: pa.Table, pictures: dict[str, tuple[Any, ...]]) -> list[ReportStudy]:
    return [
        ReportStudy(
            study_key=r["study_key"],
            patient_key=r["patient_key"],
            body_part=r["body_part"],
            images=r["images"],
            mean_prob=r["mean_prob"],
            max_prob=r["max_prob"],
            flagged=r["flagged"],
            label=r["label"],
            pictures=pictures.get(r["study_key"], ()),
        )
        for r in studies.to_pylist()
    ]


def _log_mlflow(cfg: ScreenConfig, prepared: Prepared, summary: ScreenSummary, out: Path) -> str:
    """One run in the screening experiment: params, metrics, the report (never reidentify)."""
    model = prepared.model
    client = MlflowClient(prepared.tracking_uri)
    experiment = ensure_experiment(client, cfg.experiment)
    tags = {
        "mura.job": cfg.job,
        "mura.model_version": " + ".join(
            f"{m.name}/{m.version}" for m in model.members if m.version
        )
        or "unregistered",
        "mura.model_uri": model.uri,
        "mura.model_run_id": ",".join(m.run_id or "-" for m in model.members),
        "git_commit": git_commit(),
    }
    with mlflow.start_run(experiment_id=experiment, tags=tags) as run:
        mlflow.log_params(
            {
                "source.kind": summary.source.kind,
                "source.digest": summary.source.digest,
                "model.uri": model.uri,
                "model.name": model.name,
                "model.version": model.version or "unregistered",
                "model.arch": model.info.model,
                "model.size": model.info.size,
                "threshold": summary.threshold,
                "batch_size": cfg.batch_size,
                "gpus": summary.gpus,
            }
        )
        counts = summary.counts
        mlflow.log_metrics(
            {
                "studies": counts.studies,
                "images": counts.images,
                "flagged": counts.flagged,
                "quarantined": counts.quarantined,
                "images_per_s": summary.images_per_s or 0.0,
                "seconds": summary.seconds or 0.0,
            }
        )
        if summary.write_back is not None:
            wb = summary.write_back
            mlflow.log_metrics(
                {
                    "write_back.studies": wb.studies,
                    "write_back.captures": wb.captures,
                    "write_back.failed": len(wb.failed),
                    "write_back.outbox_pending": wb.outbox_pending,
                }
            )
        for name in REPORT_FILES:
            mlflow.log_artifact(str(out / name), artifact_path="report")
        logged = replace(summary, mlflow_run_id=run.info.run_id)
        mlflow.log_text(json.dumps(logged.to_json(), indent=2), "report/" + SUMMARY)
        return run.info.run_id


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


def _without(studies: pa.Table, keys: list[str]) -> pa.Table:
    if not keys:
        return studies
    return studies.filter(pc.invert(pc.is_in(studies["study_key"], pa.array(keys, pa.string()))))


def _incomplete(problems: list[QuarantineRow]) -> list[str]:
    """Studies with an image the PACS did not hand over: not screened this run (a partial
    result would stand under the whole study's result UIDs), screened again by the next."""
    failed = {q.study_key for q in problems if q.error_type == RetrieveError.error_type}
    return sorted(k for k in failed if k is not None)


def _write_tables(
    out: Path, studies: pa.Table, quarantine: list[QuarantineRow], inp: ScreenInput
) -> None:
    pq.write_table(studies, out / "studies.parquet")
    studies.to_pandas().to_csv(out / "studies.csv", index=False)
    pq.write_table(quarantine_table(quarantine), out / "quarantine.parquet")
    write_reidentify(out / "reidentify.csv", inp.reidentify)


def _start(cfg: ScreenConfig, prepared: Prepared, inp: ScreenInput) -> int:
    """Mark OUT as a report in progress, start (or join) Ray: the GPUs to use."""
    out = prepared.out
    check_fits(prepared.model, inp)
    (out / SUMMARY).unlink(missing_ok=True)
    (out / MARKER).write_text("mura screening report\n")
    console.keep_log(out, cfg.job)
    ensure_ray(cfg.address)
    return _gpus(cfg)


def execute(cfg: ScreenConfig, prepared: Prepared, inp: ScreenInput) -> ScreenResult:
    """Score `inp` with the prepared model into the prepared OUT; see the module docstring."""
    laps = _Laps()
    out, model = prepared.out, prepared.model
    threshold = model.info.threshold if cfg.threshold is None else cfg.threshold
    screened_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    gpus = _start(cfg, prepared, inp)
    laps.lap("ray")
    scored, decode_problems = _stream_scores(cfg, model, inp, out, gpus)
    laps.lap("score")
    if scored + len(decode_problems) != inp.images:
        raise ScreenError(
            f"accounting failed: {inp.images} images in, {scored} scored + "
            f"{len(decode_problems)} quarantined out"
        )
    images = pq.read_table(out / "images.parquet")
    grouped = _aggregate(out / "images.parquet", scored)
    studies = _study_table(grouped, threshold, model, screened_at)
    incomplete = _incomplete(decode_problems)
    results = None
    if prepared.dest is not None:
        results, unbuilt = build_results(inp, _without(studies, incomplete), images, model)
        incomplete = sorted({*incomplete, *unbuilt})
        laps.lap("results")
    studies = _without(studies, incomplete)
    laps.lap("aggregate")
    quarantine = [*inp.problems, *decode_problems]
    _write_tables(out, studies, quarantine, inp)
    flagged = studies.filter(studies["flagged"])["study_key"].to_pylist()
    shown = flagged[: cfg.pictures]
    pictures = study_pictures(inp, model.folder, images, shown)
    laps.lap("pictures")
    written = None
    if results is not None and prepared.dest is not None and prepared.outbox is not None:
        written = store_results(
            prepared.dest, results, prepared.outbox, report=out.name, delivered=prepared.delivered
        )
        laps.lap("write-back")
    summary = ScreenSummary(
        screened_at=screened_at,
        source=SourceSummary(kind=inp.kind, digest=inp.digest),
        model=_model_summary(model),
        threshold=threshold,
        counts=ScreenCounts(studies.num_rows, scored, len(flagged), len(quarantine)),
        job=cfg.job,
        experiment=cfg.experiment if prepared.tracking_uri else None,
        by_body_part=_by_body_part(studies),
        quarantine=tuple(quarantine[:SUMMARY_QUARANTINE_ROWS]),
        gpus=gpus,
        images_per_s=round(scored / max(laps.phases["score"], 1e-9), 2),
        pictures_limit_note=(
            f"pictures for the first {len(shown)} of {len(flagged)} flagged studies"
            if len(flagged) > len(shown)
            else None
        ),
        seconds=laps.total(),
        write_back=written,
        incomplete_studies=tuple(incomplete),
        source_notes=inp.notes,
    )
    return _finish(cfg, prepared, summary, _report_studies(studies, pictures), laps)


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
    run_id = _log_mlflow(cfg, prepared, logged, out) if prepared.tracking_uri else None
    laps.lap("mlflow")
    summary = replace(summary, phases=dict(laps.phases), mlflow_run_id=run_id)
    write_summary(out, summary)
    return ScreenResult(out, summary, run_id)


def run_screen(cfg: ScreenConfig) -> ScreenResult:
    """Screen `cfg.source` into `cfg.out`; whole-run problems raise before any work."""
    prepared = preflight(cfg)
    inp = open_input(
        cfg.source,
        kind=cfg.kind,
        labels=cfg.labels,
        pseudonymize=cfg.pseudonymize,
        pacs=cfg.pacs,
    )
    check_fits(prepared.model, inp)
    return execute(cfg, prepared, inp)


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
        f"{'body part':<12} {'studies':>8} {'images':>7} {'flagged':>8}",
    ]
    for part, v in s.by_body_part.items():
        lines.append(f"{part:<12} {v.studies:>8} {v.images:>7} {v.flagged:>8}")
    if s.incomplete_studies:
        lines.append(
            f"{len(s.incomplete_studies)} studies not screened: some of their images could not "
            "be retrieved (quarantine: retrieve_failed); run again to screen them"
        )
    if (wb := s.write_back) is not None:
        lines.append(
            f"written back to {wb.destination}: {wb.studies} studies ({wb.reports} SR, "
            f"{wb.captures} Secondary Captures)"
            + (f", {len(wb.failed)} not stored (in the outbox)" if wb.failed else "")
            + (f", {wb.outbox_delivered} delivered from the outbox" if wb.outbox_delivered else "")
        )
    if result.run_id:
        lines.append(f"MLflow run {result.run_id} (experiment {s.experiment or 'mura-screen'})")
    lines.append(f"re-identification map (not logged): {result.out / 'reidentify.csv'}")
    return "\n".join(lines)
