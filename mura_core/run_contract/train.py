"""2. Training runs (params, tags, evaluation metrics, the record `mura compare` reads)
and 3. the tags of the model versions registered from them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mura_core.run_contract.tags import Tag, bool_tag

if TYPE_CHECKING:  # annotations only: monitor and the Ray Train controller import this
    from mura_core.metrics import BinaryMetrics, Evaluation
    from mura_core.monitoring.snapshot import Snapshot
    from mura_core.recipes import Recipe


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
    return tags | {Tag.COLLAPSED: bool_tag(collapsed)}


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
