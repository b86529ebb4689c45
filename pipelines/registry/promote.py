"""Promotion: point a registered model's alias (default `champion`) at the version registered
from a training run, registering the run's logged model first if it never was; one holder per
alias across models, so that `@champion` alone names a model (screen's and nightly's
default)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mura_core.run_contract import ModelVersionTags, TrainRunRecord
from pipelines.registry.runs import (
    DEFAULT_ALIAS,
    CompareError,
    Registered,
    get_run,
    legacy_model,
    logged_model_ids,
    registered,
)
from pipelines.registry.tracking import use_tracking


def _threshold(model_uri: str, record: TrainRunRecord) -> str | None:
    """The threshold stored in the logged bundle's metadata, else the one logged as metric."""
    try:
        from mlflow.models import get_model_info

        mura = (get_model_info(model_uri).metadata or {}).get("mura") or {}
        if "threshold" in mura:
            return str(float(mura["threshold"]))
    except Exception:  # an unreadable MLmodel: fall back to the run's metric
        pass
    value = record.threshold
    return None if value is None else str(value)


def _register(client: MlflowClient, run: Any, name: str) -> Registered:
    """Register the run's logged model under `name` (created when new), tagged like
    `mura train` tags its versions (threshold, run_id, body_part, seed)."""
    run_id = run.info.run_id
    model_ids = logged_model_ids(run)
    model_id = model_ids[0] if model_ids else None
    source = f"models:/{model_id}" if model_id else f"{run.info.artifact_uri}/model"
    use_tracking(client.tracking_uri)
    record = TrainRunRecord.from_run(run.data.metrics, run.data.tags, run.data.params)
    threshold = _threshold(source, record)
    tags = ModelVersionTags(
        run_id,
        seed=record.seed,
        body_part=run.data.params.get("body_part"),
        threshold=None if threshold is None else float(threshold),
    )
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name)
    version = client.create_model_version(
        name,
        source,
        run_id=run_id,
        tags=tags.to_tags(),
        model_id=model_id,
    )
    if model_id:  # the logged model links to its versions, as mlflow.register_model does
        logged = client.get_logged_model(model_id)
        links = json.loads(logged.tags.get("mlflow.modelVersions") or "[]")
        links.append({"name": name, "version": str(version.version)})
        client.set_logged_model_tags(model_id, {"mlflow.modelVersions": json.dumps(links)})
    return Registered(name, str(version.version))


@dataclass(frozen=True)
class Promotion:
    name: str
    version: str
    run_id: str
    alias: str
    previous: str | None  # the version the alias pointed at before, if any
    registered_now: bool  # the run's model was registered by this promotion
    demoted: tuple[str, ...] = ()  # other models that held the alias and lost it


def promote(
    client: MlflowClient,
    run_id: str,
    alias: str = DEFAULT_ALIAS,
    *,
    name: str | None = None,
) -> Promotion:
    """Point `name@alias` at the version registered from `run_id`.

    `name` defaults to the run's registered model (the newest version of it when the run was
    registered more than once); a run registered under several names needs `name`. A run
    whose logged model was never registered (or not under `name`) is registered first, as
    `name` or `mura-<model>`. A run without a logged model is refused.
    """
    run = get_run(client, run_id)
    run_id = run.info.run_id
    versions = registered(client, run_id)
    names = sorted({r.name for r in versions})
    if name is None and len(names) > 1:
        raise CompareError(
            f"run {run_id} is registered as {', '.join(names)}: say which with --name"
        )
    target = name or (names[0] if names else None)
    chosen = next((r for r in versions if r.name == target), None)
    registered_now = False
    if chosen is None:
        if not (logged_model_ids(run) or legacy_model(run)):
            raise CompareError(
                f"run {run_id} ({run.info.run_name}) has no logged model to promote "
                "(no model was logged: a failed or unfinished training?)"
            )
        model = TrainRunRecord.from_run(run.data.metrics, run.data.tags, run.data.params).model
        if target is None and not model:
            raise CompareError(f"run {run_id} logged no `model` param: name the model with --name")
        chosen = _register(client, run, target or f"mura-{model}")
        registered_now = True
    try:
        previous = str(client.get_model_version_by_alias(chosen.name, alias).version)
    except MlflowException:
        previous = None
    client.set_registered_model_alias(chosen.name, alias, chosen.version)
    # one holder per alias across models, so that `@champion` alone names a model (the
    # default of screen and nightly): a DenseNet promoted over a CNN takes it from mura-cnn
    demoted = []
    for other in client.search_registered_models():
        if other.name != chosen.name and alias in (other.aliases or {}):
            client.delete_registered_model_alias(other.name, alias)
            demoted.append(f"{other.name} v{other.aliases[alias]}")
    return Promotion(
        chosen.name, chosen.version, run_id, alias, previous, registered_now, tuple(demoted)
    )
