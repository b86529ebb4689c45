"""The MLflow run contract: every tag, param and metric name the project logs, and the typed
records that write them and read them back.

MLflow stores flat strings and numbers; everything else in the project passes the frozen
records below. A writer turns a record into the flat dicts MLflow takes (`to_tags`,
`to_params`, `to_metrics`); a reader turns what a run holds back into a record
(`from_run(metrics, tags, params)`). No MLflow import here: the calls stay in `pipelines`.
The names are those runs have always been logged with, so existing stores and registered
models read as before (`tests/mura_core/test_run_contract.py` pins them).

1. The Ray Train report row (`EpochReport`; `PretrainEpochReport` for `mura pretrain`): what a
   worker hands `ray.train.report` every epoch, a flat dict of numbers at Ray's boundary
   (`to_dict` / `from_dict`), logged by the controller callback with `step=epoch` under its
   field names (`train_loss`, `val_loss`, `val_study_auroc`, …; `to_metrics`), and kept in
   a checkpoint's `history.json`.
2. A training run (`mura train`, experiment `mura-train`): opened with `TrainRunParams` (tags
   `mura.recipe`, `mura.model`, `mura.body_part`; params `recipe`, `model`, `body_part`,
   `recipe.<field>`, `seed`, `data.*`, …); once the model is chosen, the tags
   `mura.threshold_rule` and `mura.collapsed` and the metric `val.logit_std`; then the
   evaluation (`evaluation_metrics`: `<split>.<image|study>.<figure>[.<BODY_PART>]`,
   `<split>.threshold[.<BODY_PART>]`), calibration (`ece_metric`, `calibration.temperature`)
   and the validation reference (`reference_metrics`: `reference.*`). `mura compare` reads
   a run back as a `TrainRunRecord`. A pretraining run (`mura pretrain`) is tagged with
   `pretrain_tags` (`mura.kind`, `mura.method`, `mura.model`).
3. The model versions registered from a run carry `ModelVersionTags` (`threshold`, `run_id`,
   `body_part`, `seed`; an encoder's `kind` and `method`).
4. A screening run (`mura screen` and `mura nightly`, experiment `mura-screen`): a
   `ScreenRunRecord` — tags `mura.job`, the model's identity (`mura.model_version`,
   `mura.model_uri`, `mura.model_run_id`), `git_commit`, and, when monitored,
   `mura.reference` and `mura.alert`; params `ScreenRunParams` (`source.*`, `model.*`,
   `threshold`, `batch_size`, `gpus`); metrics the counts (`studies`, `images`, `flagged`,
   …), the monitoring figures (their flat names: `flag_rate`, `flag_rate.<BODY_PART>`,
   `score.p50`, `drift.score_psi`, …, see `mura_core.records.MonitoringSummary`) and
   `write_back.*`. `mura monitor` reads runs back with `ScreenRunRecord.from_run`.
5. A feedback period (`mura feedback`, experiment `mura-monitor`): a `FeedbackPeriod` — tags
   `mura.job = feedback`, `mura.period`, `mura.alert` when out of band; metrics
   `realized.studies` and `realized.<figure>[_ci_low|_ci_high][.<BODY_PART>]`. `mura monitor`
   reads them back with `FeedbackPeriod.from_run`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, ClassVar, Self

if TYPE_CHECKING:  # annotations only: monitor and the Ray Train controller import this
    from .feedback import Estimate
    from .metrics import BinaryMetrics, Evaluation
    from .monitoring.snapshot import Snapshot
    from .recipes import Recipe
    from .records import MonitoringSummary, ScreenSummary, WriteBackSummary


class Tag:
    """Run tag names (a namespace)."""

    JOB = "mura.job"  # which command logged a screening or feedback run: see `Job`
    PERIOD = "mura.period"  # a feedback period, e.g. 2026-W49
    ALERT = "mura.alert"  # every out-of-band reason on one line; absent when in band
    REFERENCE = "mura.reference"  # "true" / "false": the model carried a reference
    MODEL_VERSION = "mura.model_version"  # `name/version` of each member, " + "-joined
    MODEL_URI = "mura.model_uri"
    MODEL_RUN_ID = "mura.model_run_id"  # each member's training run, ","-joined ("-": none)
    RECIPE = "mura.recipe"
    MODEL = "mura.model"
    BODY_PART = "mura.body_part"
    THRESHOLD_RULE = "mura.threshold_rule"  # how the threshold was chosen on val
    COLLAPSED = "mura.collapsed"  # "true" / "false": the chosen model's outputs
    KIND = "mura.kind"  # a pretraining run: "encoder"
    METHOD = "mura.method"  # a pretraining run: "vicreg"
    GIT_COMMIT = "git_commit"
    MLFLOW_MODEL_HISTORY = "mlflow.log-model.history"  # MLflow 2's record of logged models


class Job:
    """Values of the `mura.job` tag."""

    SCREEN = "screen"
    NIGHTLY = "nightly"
    FEEDBACK = "feedback"


def _bool_tag(value: bool) -> str:
    return str(value).lower()


# 1. The Ray Train report row ---------------------------------------------------------------


@dataclass(frozen=True)
class _Report:
    """An epoch's numbers as a flat dict (None: not measured on this rank or epoch)."""

    epoch: int

    def to_dict(self) -> dict[str, float]:
        """The row `ray.train.report` takes: the measured fields, by name."""
        out: dict[str, float] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = float(value) if isinstance(value, bool) else value
        return out

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> Self:
        """A reported row, or a `history.json` row; keys it does not know are left out."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in row.items() if k in known}
        values["epoch"] = int(row.get("epoch", 0))
        return cls(**values)

    def to_metrics(self) -> dict[str, float]:
        """What MLflow logs at `step=epoch`: every finite number but the epoch."""
        return {
            k: float(v)
            for k, v in self.to_dict().items()
            if k != "epoch" and isinstance(v, int | float) and math.isfinite(float(v))
        }


@dataclass(frozen=True)
class EpochReport(_Report):
    """One `mura train` epoch. Every rank reports the training figures (all-reduced); rank 0
    adds the val ones. `val_collapsed`: the val outputs have no spread (logged as 0/1)."""

    STEP_METRIC: ClassVar[str] = "train_loss"  # its logged steps are the epochs logged
    CHECKPOINT_SCORE: ClassVar[str] = "val_loss"  # Ray Train keeps the lowest's checkpoints
    lr: float | None = None
    train_loss: float | None = None
    train_accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    val_logit_std: float | None = None
    val_collapsed: bool | None = None
    val_study_auroc: float | None = None
    epoch_seconds: float | None = None

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> Self:
        report = super().from_dict(row)
        if report.val_collapsed is not None:
            report = replace(report, val_collapsed=bool(report.val_collapsed))
        return report

    @property
    def collapsed(self) -> bool:
        return bool(self.val_collapsed)


@dataclass(frozen=True)
class PretrainEpochReport(_Report):
    """One `mura pretrain` epoch: the VICReg loss and its terms, the embeddings' spread."""

    STEP_METRIC: ClassVar[str] = "loss"
    lr: float | None = None
    loss: float | None = None
    invariance: float | None = None
    variance: float | None = None
    covariance: float | None = None
    embedding_std: float | None = None
    steps: float | None = None
    epoch_seconds: float | None = None

    @property
    def collapsed(self) -> None:
        """Not judged per epoch: the console line says when the variance term nears 1."""
        return None


# 2. Training runs ----------------------------------------------------------------------------

SPLITS = ("train", "val", "test")
CALIBRATION_TEMPERATURE = "calibration.temperature"
VAL_LOGIT_STD = "val.logit_std"


@dataclass(frozen=True)
class TrainRunParams:
    """What `mura train` logs when it opens its run: the recipe, the data and the set-up."""

    recipe: Recipe
    body_part: str | None  # None: all body parts
    workers: int
    gpu: bool
    weights: str  # the initial weights, as resolved: "none (random init)", "imagenet (…)", …
    target_sensitivity: float | None
    seed: int
    max_failures: int
    manifest_digest: str
    shard_size: int
    images: Mapping[str, int]  # per split
    git_commit: str
    tool_version: str
    ray_train_name: str

    def to_tags(self) -> dict[str, str]:
        return {
            Tag.RECIPE: self.recipe.name,
            Tag.MODEL: self.recipe.model,
            Tag.BODY_PART: self.body_part or "all",
        }

    def to_params(self) -> dict[str, str]:
        params = {f"recipe.{k}": str(v) for k, v in self.recipe.to_dict().items()}
        params.update(
            {
                "recipe": self.recipe.name,
                "model": self.recipe.model,
                "body_part": self.body_part or "all",
                "workers": str(self.workers),
                "gpu": str(self.gpu),
                "weights": self.weights,
                "target_sensitivity": str(self.target_sensitivity or "none"),
                "seed": str(self.seed),
                "max_failures": str(self.max_failures),
                "data.manifest_digest": self.manifest_digest,
                "data.shard_size": str(self.shard_size),
                "git_commit": self.git_commit,
                "tool_version": self.tool_version,
                "ray_train_name": self.ray_train_name,
            }
        )
        params.update({f"data.{s}_images": str(n) for s, n in self.images.items()})
        return params


def operating_tags(rule: str | None, collapsed: bool) -> dict[str, str]:
    """The tags of the chosen model: its threshold rule (none when it is NaN) and collapse."""
    tags = {} if rule is None else {Tag.THRESHOLD_RULE: rule}
    return tags | {Tag.COLLAPSED: _bool_tag(collapsed)}


def metric_name(split: str, level: str, figure: str, part: str | None = None) -> str:
    """`test.study.kappa`, `test.study.kappa.XR_WRIST`, `val.image.accuracy`, …"""
    return f"{split}.{level}.{figure}" + (f".{part}" if part else "")


def ci_names(metric: str) -> tuple[str, str]:
    """`test.study.kappa` → `test.study.kappa_ci_low`/`_high`; a body part stays last."""
    parts = metric.split(".")
    index = min(2, len(parts) - 1)  # split.level.NAME[.PART]
    low, high = list(parts), list(parts)
    low[index] += "_ci_low"
    high[index] += "_ci_high"
    return ".".join(low), ".".join(high)


def logged_ci(metrics: Mapping[str, float], metric: str) -> tuple[float, float] | None:
    """The 95 % CI logged beside `metric` (`….kappa` → `….kappa_ci_low|high`), if any."""
    low, high = ci_names(metric)
    if low in metrics and high in metrics:
        return metrics[low], metrics[high]
    return None


def _figures(metrics: BinaryMetrics) -> dict[str, float]:
    values = {
        "accuracy": metrics.accuracy,
        "auroc": metrics.auroc,
        "kappa": metrics.kappa,
        "sensitivity": metrics.sensitivity,
        "specificity": metrics.specificity,
        "n": float(metrics.n),
    }
    if metrics.kappa_ci is not None:
        values["kappa_ci_low"], values["kappa_ci_high"] = metrics.kappa_ci
    return {k: float(v) for k, v in values.items() if v is not None}


def evaluation_metrics(
    evaluation: Evaluation, split: str, *, by_part: bool = True
) -> dict[str, float]:
    """One split's evaluation under its metric names (the figures that are defined); with
    `by_part=False` what a run logs for train and val: the overall figures and the per-part
    thresholds, not the overall threshold (`<split>.threshold.<BODY_PART>`, as always)."""
    levels = [("image", None, evaluation.image), ("study", None, evaluation.study)]
    if by_part:
        levels += [("image", p, m) for p, m in evaluation.image_by_part.items()]
        levels += [("study", p, m) for p, m in evaluation.study_by_part.items()]
    out = {
        metric_name(split, level, name, part): value
        for level, part, metrics in levels
        for name, value in _figures(metrics).items()
    }
    if by_part:
        out[f"{split}.threshold"] = evaluation.threshold
    for part, threshold in evaluation.part_thresholds.items():
        out[f"{split}.threshold.{part}"] = threshold
    return out


def ece_metric(split: str, *, uncalibrated: bool = False) -> str:
    """`val.study.ece` (after calibration, if any), `val.study.ece_uncalibrated` (before)."""
    return f"{split}.study.ece" + ("_uncalibrated" if uncalibrated else "")


def reference_metrics(reference: Snapshot) -> dict[str, float]:
    """The validation reference a model carries, as its training run logs it."""
    metrics = {"reference.studies": float(reference.studies)}
    if reference.flag_rate is not None:
        metrics["reference.flag_rate"] = reference.flag_rate
    if reference.sensitivity is not None:
        metrics["reference.sensitivity"] = reference.sensitivity
    if reference.sensitivity_low is not None:
        metrics["reference.sensitivity_ci_low"] = reference.sensitivity_low
    for name, value in reference.score_quantiles().items():
        metrics[f"reference.score_{name}"] = value
    return metrics


@dataclass(frozen=True)
class TrainRunRecord:
    """A training run as `mura compare` reads it back (None: not logged by that run)."""

    model: str | None
    recipe: str | None
    body_part: str | None
    seed: str | None
    metrics: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_run(
        cls, metrics: Mapping[str, float], tags: Mapping[str, str], params: Mapping[str, str]
    ) -> TrainRunRecord:
        """Params first; the tags for runs logged before those params existed."""
        return cls(
            model=params.get("model") or tags.get(Tag.MODEL),
            recipe=params.get("recipe") or tags.get(Tag.RECIPE),
            body_part=params.get("body_part") or tags.get(Tag.BODY_PART),
            seed=params.get("seed"),
            metrics=dict(metrics),
        )

    def figure(self, split: str, level: str, name: str, part: str | None = None) -> float | None:
        return self.metrics.get(metric_name(split, level, name, part))

    def ci(self, metric: str) -> tuple[float, float] | None:
        return logged_ci(self.metrics, metric)

    def by_part(self, split: str, level: str, name: str) -> dict[str, float]:
        """`test.study.kappa.<BODY_PART>` for each body part logged, sorted by part."""
        prefix = metric_name(split, level, name) + "."
        found = {k.removeprefix(prefix): v for k, v in self.metrics.items() if k.startswith(prefix)}
        return dict(sorted(found.items()))

    @property
    def threshold(self) -> float | None:
        """The test split's threshold, as logged."""
        return self.metrics.get("test.threshold")


def pretrain_tags(kind: str, method: str, model: str) -> dict[str, str]:
    return {Tag.KIND: kind, Tag.METHOD: method, Tag.MODEL: model}


# 3. Registered model versions ------------------------------------------------------------------


@dataclass(frozen=True)
class ModelVersionTags:
    """The tags of a logged model and of the registry versions made from it."""

    run_id: str
    seed: str | None = None
    body_part: str | None = None
    threshold: float | None = None  # a classifier's; log_bundle adds its bundle's
    kind: str | None = None  # an encoder: "encoder"
    method: str | None = None

    def to_tags(self) -> dict[str, str]:
        values = {
            "threshold": None if self.threshold is None else str(self.threshold),
            "run_id": self.run_id,
            "kind": self.kind,
            "method": self.method,
            "body_part": self.body_part,
            "seed": self.seed,
        }
        return {k: v for k, v in values.items() if v is not None}


# 4. Screening runs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScreenRunParams:
    """What a screening run logs as params: the source, the model, the set-up."""

    source_kind: str
    source_digest: str
    model_uri: str
    model_name: str
    model_version: str | None  # None: unregistered
    model_arch: str
    model_size: int
    threshold: float
    batch_size: int
    gpus: int

    def to_params(self) -> dict[str, Any]:
        """By name; MLflow logs each value as its `str()`."""
        return {
            "source.kind": self.source_kind,
            "source.digest": self.source_digest,
            "model.uri": self.model_uri,
            "model.name": self.model_name,
            "model.version": self.model_version or "unregistered",
            "model.arch": self.model_arch,
            "model.size": self.model_size,
            "threshold": self.threshold,
            "batch_size": self.batch_size,
            "gpus": self.gpus,
        }


@dataclass(frozen=True)
class WriteBackCounts:
    """Results stored into a PACS by a screening run."""

    studies: int
    captures: int
    failed: int
    outbox_pending: int

    @classmethod
    def of(cls, summary: WriteBackSummary) -> WriteBackCounts:
        return cls(summary.studies, summary.captures, len(summary.failed), summary.outbox_pending)

    def to_metrics(self) -> dict[str, float]:
        return {f"write_back.{f.name}": getattr(self, f.name) for f in fields(self)}


COUNT_METRICS = ("studies", "images", "flagged", "quarantined")
RATE_METRICS = ("images_per_s", "seconds", "resumed_images")


@dataclass(frozen=True)
class ScreenRunRecord:
    """A screening run: who ran it, with which model, its counts and monitoring figures."""

    job: str
    studies: int = 0
    images: int = 0
    flagged: int = 0
    quarantined: int = 0
    images_per_s: float = 0.0
    seconds: float = 0.0
    resumed_images: int = 0
    figures: Mapping[str, float] = field(default_factory=dict)  # monitoring's, flat names
    reference: bool | None = None  # None: the run was not monitored
    alert: str | None = None
    write_back: WriteBackCounts | None = None
    model_versions: str = "unregistered"  # `name/version` of each registered member
    model_uri: str = ""
    model_run_ids: str = ""  # each member's training run ("-": none), ","-joined
    git_commit: str = ""

    @classmethod
    def of(cls, summary: ScreenSummary, **identity: str) -> ScreenRunRecord:
        """From the run's summary; `identity`: the model's tags and the commit."""
        monitoring: MonitoringSummary | None = summary.monitoring
        counts = summary.counts
        return cls(
            job=summary.job,
            studies=counts.studies,
            images=counts.images,
            flagged=counts.flagged,
            quarantined=counts.quarantined,
            images_per_s=summary.images_per_s or 0.0,
            seconds=summary.seconds or 0.0,
            resumed_images=summary.resumed,
            figures=dict(monitoring.figures) if monitoring else {},
            reference=monitoring.reference if monitoring else None,
            alert=monitoring.alert if monitoring else None,
            write_back=WriteBackCounts.of(summary.write_back) if summary.write_back else None,
            **identity,
        )

    def to_tags(self) -> dict[str, str]:
        tags = {
            Tag.JOB: self.job,
            Tag.MODEL_VERSION: self.model_versions,
            Tag.MODEL_URI: self.model_uri,
            Tag.MODEL_RUN_ID: self.model_run_ids,
            Tag.GIT_COMMIT: self.git_commit,
        }
        if self.reference is not None:
            tags[Tag.REFERENCE] = _bool_tag(self.reference)
        if self.alert:
            tags[Tag.ALERT] = self.alert
        return tags

    def to_metrics(self) -> dict[str, float]:
        metrics = {name: getattr(self, name) for name in COUNT_METRICS + RATE_METRICS}
        metrics.update(self.figures)
        if self.write_back is not None:
            metrics.update(self.write_back.to_metrics())
        return metrics

    @classmethod
    def from_run(
        cls, metrics: Mapping[str, float], tags: Mapping[str, str], params: Mapping[str, str]
    ) -> ScreenRunRecord:
        """A logged run back; what it lacks keeps its default (no job tag: `screen`)."""
        own = set(COUNT_METRICS + RATE_METRICS)
        counts = {name: metrics[name] for name in own if name in metrics}
        for name in COUNT_METRICS + ("resumed_images",):
            if name in counts:
                counts[name] = int(counts[name])
        wb = {k: int(v) for k, v in metrics.items() if k.startswith("write_back.")}
        return cls(
            job=tags.get(Tag.JOB, Job.SCREEN),
            figures={k: v for k, v in metrics.items() if k not in own and k not in wb},
            reference=_read_bool(tags.get(Tag.REFERENCE)),
            alert=tags.get(Tag.ALERT),
            write_back=WriteBackCounts(**{k.split(".", 1)[1]: v for k, v in wb.items()})
            if len(wb) == len(fields(WriteBackCounts))
            else None,
            model_versions=tags.get(Tag.MODEL_VERSION, "unregistered"),
            model_uri=tags.get(Tag.MODEL_URI, ""),
            model_run_ids=tags.get(Tag.MODEL_RUN_ID, ""),
            git_commit=tags.get(Tag.GIT_COMMIT, ""),
            **counts,
        )

    @property
    def flag_rate(self) -> float | None:
        return self.figures.get(FLAG_RATE)

    def part_flag_rates(self) -> dict[str, float]:
        return part_flag_rates(self.figures)


def _read_bool(text: str | None) -> bool | None:
    return None if text is None else text == "true"


FLAG_RATE = "flag_rate"  # the monitoring figure: flagged studies / studies


def part_flag_rates(figures: Mapping[str, float]) -> dict[str, float]:
    """The flag rate of each body part screened (`flag_rate.<BODY_PART>`)."""
    prefix = FLAG_RATE + "."
    return {k.removeprefix(prefix): v for k, v in figures.items() if k.startswith(prefix)}


# 5. Feedback periods ----------------------------------------------------------------------------

REALIZED = "realized"
_CI = ("", "_ci_low", "_ci_high")


@dataclass(frozen=True)
class FeedbackPeriod:
    """One period's realized figures from radiologists' reads, overall and per body part
    (those with enough studies of each class), and its alert."""

    name: str
    studies: int
    figures: Mapping[str, Estimate]
    by_part: Mapping[str, Mapping[str, Estimate]] = field(default_factory=dict)
    alert: str | None = None

    def to_tags(self) -> dict[str, str]:
        """Set when the run opens; `mura.alert` is set (or removed) apart: see `alert`."""
        return {Tag.JOB: Job.FEEDBACK, Tag.PERIOD: self.name}

    def to_metrics(self) -> dict[str, float]:
        out = {f"{REALIZED}.studies": float(self.studies)}
        groups = [("", self.figures), *((f".{p}", f) for p, f in self.by_part.items())]
        for suffix, figures in groups:
            for name, estimate in figures.items():
                values = (estimate.value, estimate.low, estimate.high)
                for ci, value in zip(_CI, values, strict=True):
                    if value is not None:
                        out[f"{REALIZED}.{name}{ci}{suffix}"] = value
        return out

    @classmethod
    def from_run(cls, metrics: Mapping[str, float], tags: Mapping[str, str]) -> FeedbackPeriod:
        """A logged period back (a run without `mura.period` is no period: KeyError)."""
        found: dict[str | None, dict[str, dict[str, float]]] = {}
        for key, value in metrics.items():
            stem, dot, part = key.removeprefix(f"{REALIZED}.").partition(".")
            if not key.startswith(f"{REALIZED}.") or stem == "studies":
                continue
            name, ci = _split_ci(stem)
            found.setdefault(part if dot else None, {}).setdefault(name, {})[ci] = value
        estimates = {
            part: {name: _estimate(values) for name, values in sorted(figures.items())}
            for part, figures in found.items()
        }
        return cls(
            name=tags[Tag.PERIOD],
            studies=int(metrics.get(f"{REALIZED}.studies", 0)),
            figures=estimates.pop(None, {}),
            by_part=dict(sorted(estimates.items())),  # type: ignore[arg-type]
            alert=tags.get(Tag.ALERT),
        )


def _split_ci(stem: str) -> tuple[str, str]:
    for ci in _CI[1:]:
        if stem.endswith(ci):
            return stem.removesuffix(ci), ci
    return stem, ""


def _estimate(values: Mapping[str, float]) -> Estimate:
    from .feedback import Estimate  # scipy and sklearn: only when a period is read

    return Estimate(values.get(""), values.get("_ci_low"), values.get("_ci_high"))
