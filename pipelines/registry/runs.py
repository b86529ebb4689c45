"""Training runs side by side: the query (`load_runs`), its rows (`RunRow`), the order.

The table and the chart are `registry.runs_table`; promotion is `registry.promote`.

`mura compare` reads what `mura train` logged (a `mura_core.run_contract.TrainRunRecord`): params
`model`, `recipe`, `body_part`; flat metrics `train|val|test.image.accuracy`,
`test.study.auroc`, `test.study.kappa` with `test.study.kappa_ci_low|high` (95 % bootstrap
CI), `test.study.kappa.<BODY PART>`; and the model registered from the run. Promoting a run
points a registered model's alias (default `champion`) at the version registered from that
run — registering the run's logged model first if it never was — which is what `screen` and
`nightly` load by default (`models:/<name>@champion`).

Every user error is a one-line CompareError naming what does exist.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mura_core.errors import MuraError
from mura_core.run_contract import Tag, TrainRunRecord, logged_ci

DEFAULT_EXPERIMENT = "mura-train"  # TrainConfig.experiment / `mura train --experiment`
DEFAULT_METRIC = "test.study.kappa"
DEFAULT_ALIAS = "champion"
MAX_LISTED = 15


class CompareError(MuraError):
    """A comparison or promotion that cannot be done, said in one line."""


@dataclass(frozen=True)
class Registered:
    """One registered model version made from a run."""

    name: str
    version: str
    aliases: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.name} v{self.version}" + "".join(f" @{a}" for a in self.aliases)


@dataclass(frozen=True)
class RunRow:
    """One training run as `compare` shows it (None: not logged by that run)."""

    run_id: str
    run_name: str
    experiment_id: str
    status: str
    model: str | None
    recipe: str | None
    body_part: str | None
    train_accuracy: float | None
    val_accuracy: float | None
    test_accuracy: float | None
    study_auroc: float | None
    study_kappa: float | None
    kappa_ci: tuple[float, float] | None
    kappa_by_part: dict[str, float] = field(default_factory=dict)
    registered: tuple[Registered, ...] = ()
    logged_model: bool = False
    metrics: dict[str, float] = field(default_factory=dict)

    def value(self, metric: str) -> float | None:
        value = self.metrics.get(metric)
        return None if value is None or math.isnan(value) else value

    def ci(self, metric: str) -> tuple[float, float] | None:
        """The 95 % CI logged beside `metric` (`….kappa` → `….kappa_ci_low|high`), if any."""
        return logged_ci(self.metrics, metric)


def _experiment_names(client: MlflowClient) -> list[str]:
    return sorted(e.name for e in client.search_experiments())


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    more = len(names) - MAX_LISTED
    return shown + (f", … ({more} more)" if more > 0 else "") if names else "none"


def registered(client: MlflowClient, run_id: str) -> tuple[Registered, ...]:
    out = []
    for found in client.search_model_versions(f"run_id='{run_id}'"):
        # search results carry no aliases on every store: ask for the version itself
        version = client.get_model_version(found.name, str(found.version))
        aliases = tuple(sorted(getattr(version, "aliases", None) or ()))
        out.append(Registered(found.name, str(found.version), aliases))
    return tuple(sorted(out, key=lambda r: (r.name, -int(r.version))))


def logged_model_ids(run: Any) -> list[str]:
    """MLflow 3 logged models of a run (`models:/m-…`), last logged first."""
    outputs = getattr(getattr(run, "outputs", None), "model_outputs", None) or []
    return [o.model_id for o in sorted(outputs, key=lambda o: -o.step)]


def legacy_model(run: Any) -> bool:
    """A model logged by MLflow 2 (`runs:/<id>/model`), as its history tag records."""
    history = run.data.tags.get(Tag.MLFLOW_MODEL_HISTORY)
    return bool(history) and '"artifact_path": "model"' in history


def _row(client: MlflowClient, run: Any) -> RunRow:
    record = TrainRunRecord.from_run(run.data.metrics, run.data.tags, run.data.params)
    return RunRow(
        run_id=run.info.run_id,
        run_name=run.info.run_name or "",
        experiment_id=run.info.experiment_id,
        status=run.info.status,
        model=record.model,
        recipe=record.recipe,
        body_part=record.body_part,
        train_accuracy=record.figure("train", "image", "accuracy"),
        val_accuracy=record.figure("val", "image", "accuracy"),
        test_accuracy=record.figure("test", "image", "accuracy"),
        study_auroc=record.figure("test", "study", "auroc"),
        study_kappa=record.figure("test", "study", "kappa"),
        kappa_ci=record.ci(DEFAULT_METRIC),
        kappa_by_part=record.by_part("test", "study", "kappa"),
        registered=registered(client, run.info.run_id),
        logged_model=bool(logged_model_ids(run)) or legacy_model(run),
        metrics=dict(record.metrics),
    )


def get_run(client: MlflowClient, run_id: str) -> Any:
    """A run by id, or by a unique prefix of it (the table shows 8 characters)."""
    try:
        return client.get_run(run_id)
    except MlflowException:
        pass
    matches = []
    if run_id.isalnum() and len(run_id) >= 4:
        experiments = [e.experiment_id for e in client.search_experiments()]
        for page in range(0, len(experiments), 100):
            matches += [
                r
                for r in client.search_runs(experiments[page : page + 100], max_results=50000)
                if r.info.run_id.startswith(run_id)
            ]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise CompareError(
            f"run id prefix {run_id!r} is ambiguous: "
            f"{_listing(sorted(r.info.run_id for r in matches))}"
        )
    raise CompareError(f"unknown run id {run_id!r} in {client.tracking_uri}")


def load_runs(
    client: MlflowClient,
    experiment: str = DEFAULT_EXPERIMENT,
    run_ids: Sequence[str] | None = None,
    metric: str = DEFAULT_METRIC,
) -> list[RunRow]:
    """The named runs (any experiment), else the finished runs of `experiment`, sorted by
    `metric`, best first, runs without it last. One-line CompareErrors for an unknown
    experiment or run id, no runs, and a metric none of the runs logged."""
    if run_ids:
        runs = [get_run(client, rid) for rid in dict.fromkeys(run_ids)]
        where = "the given runs"
    else:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise CompareError(
                f"no experiment {experiment!r} in {client.tracking_uri}: experiments are "
                f"{_listing(_experiment_names(client))}"
            )
        every = client.search_runs([found.experiment_id], max_results=5000)
        runs = [r for r in every if r.info.status == "FINISHED"]
        if not runs:
            others = f" ({len(every)} unfinished)" if every else ""
            raise CompareError(
                f"experiment {experiment!r} has no finished runs{others}: train one with "
                f"`mura train … --experiment {experiment}`"
            )
        where = f"the runs of experiment {experiment!r}"
    rows = [_row(client, run) for run in runs]
    if not any(row.value(metric) is not None for row in rows):
        names = sorted({k for row in rows for k in row.metrics}, key=_metric_rank)
        raise CompareError(
            f"unknown metric {metric!r}: {where} logged {_listing(names)}"
            if names
            else f"unknown metric {metric!r}: {where} logged no metrics"
        )
    return sort_rows(rows, metric)


def _metric_rank(name: str) -> tuple[int, str]:
    """Listing order: test study metrics, other split metrics, per-epoch ones, per part."""
    if name.count(".") > 2:  # test.study.kappa.XR_WRIST
        return 3, name
    if name.startswith("test.study."):
        return 0, name
    return (1 if name.startswith(("test.", "val.", "train.")) else 2), name


def sort_rows(rows: Sequence[RunRow], metric: str) -> list[RunRow]:
    """Best first (highest `metric`), runs without it last, ties by run name."""
    return sorted(
        rows,
        key=lambda r: (
            r.value(metric) is None,
            -(r.value(metric) or 0.0),
            r.run_name,
            r.run_id,
        ),
    )
