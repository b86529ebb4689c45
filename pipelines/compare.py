"""Training runs side by side, a bar chart of one metric, and promotion to `champion`.

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

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mura_core.errors import MuraError
from mura_core.run_contract import ModelVersionTags, Tag, TrainRunRecord, logged_ci

from .tracking import use_tracking

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


def _registered(client: MlflowClient, run_id: str) -> tuple[Registered, ...]:
    out = []
    for found in client.search_model_versions(f"run_id='{run_id}'"):
        # search results carry no aliases on every store: ask for the version itself
        version = client.get_model_version(found.name, str(found.version))
        aliases = tuple(sorted(getattr(version, "aliases", None) or ()))
        out.append(Registered(found.name, str(found.version), aliases))
    return tuple(sorted(out, key=lambda r: (r.name, -int(r.version))))


def _logged_model_ids(run: Any) -> list[str]:
    """MLflow 3 logged models of a run (`models:/m-…`), last logged first."""
    outputs = getattr(getattr(run, "outputs", None), "model_outputs", None) or []
    return [o.model_id for o in sorted(outputs, key=lambda o: -o.step)]


def _legacy_model(run: Any) -> bool:
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
        registered=_registered(client, run.info.run_id),
        logged_model=bool(_logged_model_ids(run)) or _legacy_model(run),
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


def _f(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


SHOWN = {
    "train.image.accuracy",
    "val.image.accuracy",
    "test.image.accuracy",
    "test.study.auroc",
    "test.study.kappa",
}


def table_rows(rows: Sequence[RunRow], metric: str = DEFAULT_METRIC) -> list[dict[str, str]]:
    """One dict per run, same keys for all: the columns of `format_table`."""
    parts = sorted({p for row in rows for p in row.kappa_by_part})
    extra = metric not in SHOWN and not metric.startswith("test.study.kappa.")
    out = []
    for row in rows:
        ci = "" if row.kappa_ci is None else f" ({row.kappa_ci[0]:.3f}, {row.kappa_ci[1]:.3f})"
        cells = {
            "run": row.run_id[:8],
            "name": row.run_name,
            "model": row.model or "?",
            "recipe": row.recipe or "?",
            "body part": row.body_part or "?",
            "train acc": _f(row.train_accuracy),
            "val acc": _f(row.val_accuracy),
            "test acc": _f(row.test_accuracy),
            "study AUROC": _f(row.study_auroc),
            "study kappa (95% CI)": _f(row.study_kappa) + ci,
        }
        for part in parts:
            cells[f"kappa {part.removeprefix('XR_')}"] = _f(row.kappa_by_part.get(part))
        if extra:
            cells[metric] = _f(row.value(metric))
        cells["registered"] = (
            ", ".join(str(r) for r in row.registered)
            if row.registered
            else ("logged, not registered" if row.logged_model else "no model")
        )
        out.append(cells)
    return out


def _numeric(text: str) -> bool:
    head = text.split(" ", 1)[0]
    try:
        float(head)
    except ValueError:
        return head == "n/a"
    return True


def format_table(rows: Sequence[RunRow], metric: str = DEFAULT_METRIC) -> str:
    """Aligned plain text, one line per run in the given order; numbers right-aligned.
    Accuracies are image level (the seed's Table 1); AUROC and kappa are study level, test."""
    cells = table_rows(rows, metric)
    if not cells:
        return ""
    head = list(cells[0])
    widths = {h: max(len(h), *(len(c[h]) for c in cells)) for h in head}
    numeric = {h: all(_numeric(c[h]) for c in cells) for h in head}

    def line(values: dict[str, str]) -> str:
        return "  ".join(
            values[h].rjust(widths[h]) if numeric[h] else values[h].ljust(widths[h]) for h in head
        ).rstrip()

    return "\n".join([line({h: h for h in head}), *(line(c) for c in cells)])


def plot(rows: Sequence[RunRow], metric: str, path: Path) -> Path:
    """Horizontal bars of `metric` per run, best on top, 95 % CI error bars where logged."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = [r for r in rows if r.value(metric) is not None]
    if not shown:
        raise CompareError(f"no run has metric {metric!r} to plot")
    labels = [f"{r.run_name or r.run_id[:8]}\n{r.model or '?'} · {r.run_id[:8]}" for r in shown]
    values = [r.value(metric) or 0.0 for r in shown]
    errors = [[0.0, 0.0] for _ in shown]
    has_ci = []
    for i, r in enumerate(shown):
        ci = r.ci(metric)
        if ci is not None:
            errors[i] = [max(values[i] - ci[0], 0.0), max(ci[1] - values[i], 0.0)]
        has_ci.append(ci is not None)
    fig = Figure(figsize=(8, 1.2 + 0.7 * len(shown)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    y = list(range(len(shown)))[::-1]  # best (first) on top
    ax.barh(y, values, color="#4c72b0", height=0.6)
    if any(has_ci):
        ax.errorbar(
            values,
            y,
            xerr=[[e[0] for e in errors], [e[1] for e in errors]],
            fmt="none",
            ecolor="black",
            capsize=4,
            lw=1.2,
        )
    cis = [r.ci(metric) for r in shown]
    low = min(0.0, *values, *(ci[0] for ci in cis if ci))
    high = max(1.0, *values, *(ci[1] for ci in cis if ci))
    for yi, v, ci in zip(y, values, cis, strict=True):
        text = f"{v:.3f}" + (f"  [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        if v >= 0.45 * (high - low):  # inside a long bar, else right of the bar and its CI
            ax.text(0.01 * (high - low), yi, text, va="center", color="white", fontsize=9)
        else:
            right = max(v, ci[1] if ci else v, 0.0) + 0.01 * (high - low)
            ax.text(right, yi, text, va="center", color="black", fontsize=9)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlim(low, high)
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.set_xlabel(metric + (" (bars: 95% CI)" if any(has_ci) else ""))
    missing = len(rows) - len(shown)
    ax.set_title(
        f"{metric} by run" + (f" ({missing} run(s) without it left out)" if missing else "")
    )
    ax.grid(axis="x", lw=0.4, alpha=0.6)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


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
    model_ids = _logged_model_ids(run)
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
    registered = _registered(client, run_id)
    names = sorted({r.name for r in registered})
    if name is None and len(names) > 1:
        raise CompareError(
            f"run {run_id} is registered as {', '.join(names)}: say which with --name"
        )
    target = name or (names[0] if names else None)
    chosen = next((r for r in registered if r.name == target), None)
    registered_now = False
    if chosen is None:
        if not (_logged_model_ids(run) or _legacy_model(run)):
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
