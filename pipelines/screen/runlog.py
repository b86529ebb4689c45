"""One MLflow run per screening: tags, params and metrics (`mura_core.run_contract`'s
`ScreenRunRecord` and `ScreenRunParams` name them), the report files (never `reidentify.csv`)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from mura_core.run_contract import ScreenRunParams, ScreenRunRecord
from mura_core.screen_summary import SUMMARY_FILE, ScreenSummary
from pipelines.registry.tracking import ensure_experiment, git_commit
from pipelines.screen.models import ScreeningModel

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
    record = ScreenRunRecord.of(
        replace(summary, job=job),
        model_versions=" + ".join(f"{m.name}/{m.version}" for m in model.members if m.version)
        or "unregistered",
        model_uri=model.uri,
        model_run_ids=",".join(m.run_id or "-" for m in model.members),
        git_commit=git_commit(),
    )
    params = ScreenRunParams(
        source_kind=summary.source.kind,
        source_digest=summary.source.digest,
        model_uri=model.uri,
        model_name=model.name,
        model_version=model.version,
        model_arch=model.info.model,
        model_size=model.info.size,
        threshold=summary.threshold,
        batch_size=batch_size,
        gpus=summary.gpus,
    )
    with mlflow.start_run(experiment_id=experiment, tags=record.to_tags()) as run:
        mlflow.log_params(params.to_params())
        mlflow.log_metrics(record.to_metrics())
        for name in REPORT_FILES:
            mlflow.log_artifact(str(out / name), artifact_path="report")
        logged = replace(summary, mlflow_run_id=run.info.run_id)
        mlflow.log_text(json.dumps(logged.to_json(), indent=2), "report/" + SUMMARY_FILE)
        return run.info.run_id
