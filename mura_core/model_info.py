"""What a model is: model.json's content (`ModelInfo`: architecture, input size and
normalization, how it decides — threshold, per-part thresholds, temperature — the `Recipe`
that trained it and its `ModelOrigin`), checked value by value when read, so that a bundle no
model could be built or fed from is one `BundleError` line before anything is allocated.
The files themselves (weights, folders, training checkpoints) are `mura_core.checkpoints`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from numbers import Integral, Real
from typing import Any

from mura_core.decisions import OperatingPoint
from mura_core.errors import MuraError
from mura_core.models import is_model_name, model_names
from mura_core.recipes import Recipe
from mura_core.transforms import EvalPreset

FORMAT_VERSION = 1
MIN_SIZE, MAX_SIZE = 16, 2048  # input sizes (px) a bundle may declare; also ingest's --size
REQUIRED_KEYS = ("format_version", "model", "size", "mean", "std")


class BundleError(MuraError, ValueError):
    """A folder that is not a model bundle, or a bundle file refused (see the module doc)."""


@dataclass(frozen=True)
class ModelOrigin:
    """Where a bundle's model came from: model.json's `extra` object. Every key is optional;
    keys this version does not know are kept as read (`others`) and written back."""

    run_id: str | None = None  # the MLflow run that trained it
    body_part: str | None = None  # what it was trained on ("all": every body part)
    ensemble_size: int | None = None  # the best checkpoints it averages (`keep_best`)
    shard_size: int | None = None  # the side of the shards it was trained on
    weights: str | None = None  # the initial weights, as the training run logged them
    kind: str | None = None  # "encoder": a pretrained encoder (`mura pretrain`), no classifier
    method: str | None = None  # an encoder's pretraining method ("vicreg")
    checkpoint: str | None = None  # a pretraining checkpoint: what its weights.pt holds
    epochs: int | None = None  # an encoder's epochs
    images: int | None = None  # an encoder's train + val images
    splits: str | None = None  # an encoder's splits ("train+val")
    final_loss: float | None = None  # an encoder's last epoch loss
    ensemble_of: tuple[str, ...] = ()  # a screening ensemble: its members' URIs
    others: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "others"}
        data["ensemble_of"] = list(self.ensemble_of)
        return {k: v for k, v in data.items() if v not in (None, [])} | dict(self.others)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelOrigin:
        known = {f.name for f in fields(cls)} - {"others"}
        values = {k: v for k, v in data.items() if k in known}
        if "ensemble_of" in values:
            values["ensemble_of"] = tuple(values["ensemble_of"] or ())
        others = {k: v for k, v in data.items() if k not in known}
        return cls(**values, others=others)


@dataclass(frozen=True)
class ModelInfo:
    """What is needed to rebuild and feed a model, and to interpret its output; the recipe
    that trained it and where it came from (`extra`). The JSON objects of model.json may
    be given for `recipe` and `extra`: they are read into their records."""

    model: str
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    threshold: float = 0.5
    recipe: Recipe | None = None
    extra: ModelOrigin = field(default_factory=ModelOrigin)
    temperature: float = 1.0  # logits are divided by it (temperature scaling; 1: none)
    part_thresholds: dict[str, float] | None = None  # per body part; others: `threshold`
    in_channels: int = 3  # 1: a one-channel stem, fed gray (the eval preset keeps 1 channel)
    tta: bool = False  # the model is wrapped in `FlipTTA`: an image and its mirror averaged

    def __post_init__(self) -> None:
        """Refuse (BundleError) any value no model could be built or fed from; numbers are
        then stored as plain ints and floats."""
        problem = _info_problem(self)
        if problem:
            raise BundleError(problem)
        parts = {k: float(v) for k, v in (self.part_thresholds or {}).items()}
        object.__setattr__(self, "size", int(self.size))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "threshold", float(self.threshold))
        object.__setattr__(self, "temperature", float(self.temperature))
        object.__setattr__(self, "part_thresholds", parts or None)
        if isinstance(self.recipe, dict):
            object.__setattr__(self, "recipe", _recipe(self.recipe))
        if not isinstance(self.extra, ModelOrigin):
            object.__setattr__(self, "extra", ModelOrigin.from_json(self.extra or {}))

    def operating_point(self, threshold: float | None = None) -> OperatingPoint:
        """How this model decides (`mura_core.decisions`): its threshold, per-part thresholds
        and temperature; a `threshold` given (`--threshold`) replaces every one of them."""
        if threshold is not None:
            return OperatingPoint(threshold, {}, self.temperature)
        return OperatingPoint(self.threshold, self.part_thresholds or {}, self.temperature)

    def threshold_for(self, body_part: str | None) -> float:
        """The operating threshold of a study of this body part."""
        return self.operating_point().threshold_for(body_part)

    def eval_preset(self) -> EvalPreset:
        return EvalPreset(size=self.size, mean=self.mean, std=self.std, channels=self.in_channels)

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "model": self.model,
            "size": self.size,
            "mean": list(self.mean),
            "std": list(self.std),
            "threshold": self.threshold,
            "recipe": None if self.recipe is None else self.recipe.to_dict(),
            "extra": self.extra.to_json(),
            "temperature": self.temperature,
            "part_thresholds": dict(self.part_thresholds or {}),
            "in_channels": self.in_channels,
            "tta": self.tta,
        }

    @classmethod
    def from_json(cls, data: Any) -> ModelInfo:
        """The parsed model.json, checked: a one-line BundleError for a missing key, another
        format version or a value out of range (the line does not name the file)."""
        if not isinstance(data, dict):
            raise BundleError(f"not a JSON object but a {type(data).__name__}")
        missing = [key for key in REQUIRED_KEYS if key not in data]
        if missing:
            raise BundleError(f"misses the key(s) {', '.join(missing)}")
        version = data["format_version"]
        if version != FORMAT_VERSION:
            raise BundleError(f"model bundle format {show_value(version)} is not {FORMAT_VERSION}")
        mean, std = data["mean"], data["std"]
        return cls(
            model=data["model"],
            size=data["size"],
            mean=tuple(mean) if isinstance(mean, list) else mean,
            std=tuple(std) if isinstance(std, list) else std,
            threshold=data.get("threshold", 0.5),
            recipe=data.get("recipe"),
            extra=data.get("extra") or ModelOrigin(),
            temperature=data.get("temperature", 1.0),
            part_thresholds=data.get("part_thresholds") or None,
            in_channels=data.get("in_channels", 3),
            tta=data.get("tta", False),
        )

    @classmethod
    def from_recipe(cls, recipe: Recipe, **kwargs: Any) -> ModelInfo:
        return cls(
            model=recipe.model,
            size=recipe.size,
            mean=recipe.mean,
            std=recipe.std,
            recipe=recipe,
            in_channels=recipe.in_channels,
            tta=recipe.tta,
            **kwargs,
        )


def show_value(value: object) -> str:
    """A value as the one line of an error shows it (repr, at most 60 characters)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _real(value: object) -> bool:
    """A finite number, numpy's included (a bool is not one)."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _unit(value: object) -> bool:
    """A number within 0..1."""
    return isinstance(value, Real) and _real(value) and 0 <= value <= 1


def _triple(value: object) -> bool:
    return isinstance(value, tuple) and len(value) == 3 and all(_real(v) for v in value)


def _info_problem(info: ModelInfo) -> str | None:
    """The first value of `info` no model could be built or fed from, or None."""
    if not is_model_name(info.model):
        return (
            f"model {show_value(info.model)} is not a known architecture "
            f"({', '.join(model_names())} or a torchvision classification model)"
        )
    size = info.size
    if not isinstance(size, Integral) or isinstance(size, bool) or not MIN_SIZE <= size <= MAX_SIZE:
        return f"size {show_value(size)} is not an integer within {MIN_SIZE}..{MAX_SIZE}"
    if not _triple(info.mean):
        return f"mean {show_value(info.mean)} is not three finite numbers"
    if not _triple(info.std) or min(info.std) <= 0:
        return f"std {show_value(info.std)} is not three finite numbers > 0"
    if not _unit(info.threshold):
        return f"threshold {show_value(info.threshold)} is not a number within 0..1"
    if not _real(info.temperature) or info.temperature <= 0:
        return f"temperature {show_value(info.temperature)} is not a finite number > 0"
    parts = info.part_thresholds
    if parts is not None and not isinstance(parts, dict):
        return f"part_thresholds {show_value(parts)} is not an object"
    for part, value in (parts or {}).items():
        if not isinstance(part, str):
            return f"part_thresholds key {show_value(part)} is not a body part name (a string)"
        if not _unit(value):
            return f"part_thresholds {part!r}: {show_value(value)} is not a threshold within 0..1"
    if info.in_channels not in (1, 3) or isinstance(info.in_channels, bool):
        return f"in_channels {show_value(info.in_channels)} is not 1 or 3"
    if not isinstance(info.tta, bool):
        return f"tta {show_value(info.tta)} is not true or false"
    for key, record in (("recipe", Recipe), ("extra", ModelOrigin)):
        if not isinstance(getattr(info, key), dict | record | None):
            return f"{key} {show_value(getattr(info, key))} is not an object"
    return None


def _recipe(data: dict[str, Any]) -> Recipe:
    """model.json's recipe object as a `Recipe` (keys a newer version added are left out;
    those missing in an older file take their defaults), or one BundleError line."""
    known = {f.name for f in fields(Recipe)}
    try:
        return Recipe.from_dict({k: v for k, v in data.items() if k in known})
    except (MuraError, TypeError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:120]
        raise BundleError(
            f"recipe {show_value(data.get('name'))} is not a recipe ({reason})"
        ) from None
