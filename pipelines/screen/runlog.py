"""One MLflow run per screening: params, metrics, the report files (never `reidentify.csv`)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from mura_core.records import ScreenSummary
from mura_core.screen_report import SUMMARY_FILE

from ..tracking import ensure_experiment, git_commit
from .models import ScreeningModel

REPORT_FILES = (
    "studies.parquet",
    "studies.csv",
    "images.parquet",
    "quarantine.parquet",
    "report.html",
)


def log_screen_run(
    summary: ScreenSummary,
    model: ScreeningModel,
    out: Path,
    *,
    tracking_uri: str,
    experiment: str,
    job: str,
    batch_size: int,
) -> str:
    """One run in the screening experiment: params, metrics, the report (never reidentify)."""
    client = MlflowClient(tracking_uri)
    experiment = ensure_experiment(client, experiment)
    tags = {
        "mura.job": job,
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
                "batch_size": batch_size,
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
                "resumed_images": summary.resumed,
            }
        )
        if summary.monitoring is not None:
            mlflow.log_metrics(summary.monitoring.figures)
            mlflow.set_tag("mura.reference", str(summary.monitoring.reference).lower())
            if summary.monitoring.alert:
                mlflow.set_tag("mura.alert", summary.monitoring.alert)
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
        mlflow.log_text(json.dumps(logged.to_json(), indent=2), "report/" + SUMMARY_FILE)
        return run.info.run_id
