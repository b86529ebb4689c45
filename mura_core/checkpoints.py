"""Checkpoint and model-bundle format: tensors in one file, configuration as JSON.

A folder with `weights.pt` (a state_dict of tensors, read back with `weights_only=True`, so
loading a checkpoint never runs pickled code) and `model.json` (model name, input size,
normalization, threshold; the `Recipe` that trained it and the model's `ModelOrigin`: its
training run, data and initial weights, or an encoder's pretraining). Training checkpoints
add `train_state.pt` (optimizer and scheduler state, tensors and numbers only) and
`history.json` (the epochs' report rows, `mura_core.run_contract`). The same folder layout is
shipped inside every logged MLflow model, which is how screening rebuilds a model.

Reading a bundle refuses, in one `BundleError` line that names the file, whatever no model
could safely be built or fed from: a model.json that is not JSON, misses a key or holds a
value out of range (checked by `ModelInfo` itself, before any model is built or allocated),
and a weights file that is not a plain state dict of tensors fitting the model (a pickle
carrying code or other objects, which the tensors-only reader stops before anything runs;
a truncated or foreign file; non-tensor values; missing, unexpected or mis-shaped keys).
torch's own message is never passed on: it advises loading the file unsafely.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .decisions import OperatingPoint
from .errors import MuraError
from .models import (  # Ensemble: re-exported
    Ensemble,
    FlipTTA,
    build_model,
    is_model_name,
    model_names,
)
from .recipes import Recipe
from .run_contract import EpochReport, PretrainEpochReport
from .transforms import EvalPreset

WEIGHTS = "weights.pt"
MODEL_JSON = "model.json"
MEMBERS = "members"
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
            raise BundleError(f"model bundle format {_show(version)} is not {FORMAT_VERSION}")
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


def _show(value: object) -> str:
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
            f"model {_show(info.model)} is not a known architecture "
            f"({', '.join(model_names())} or a torchvision classification model)"
        )
    size = info.size
    if not isinstance(size, Integral) or isinstance(size, bool) or not MIN_SIZE <= size <= MAX_SIZE:
        return f"size {_show(size)} is not an integer within {MIN_SIZE}..{MAX_SIZE}"
    if not _triple(info.mean):
        return f"mean {_show(info.mean)} is not three finite numbers"
    if not _triple(info.std) or min(info.std) <= 0:
        return f"std {_show(info.std)} is not three finite numbers > 0"
    if not _unit(info.threshold):
        return f"threshold {_show(info.threshold)} is not a number within 0..1"
    if not _real(info.temperature) or info.temperature <= 0:
        return f"temperature {_show(info.temperature)} is not a finite number > 0"
    parts = info.part_thresholds
    if parts is not None and not isinstance(parts, dict):
        return f"part_thresholds {_show(parts)} is not an object"
    for part, value in (parts or {}).items():
        if not isinstance(part, str):
            return f"part_thresholds key {_show(part)} is not a body part name (a string)"
        if not _unit(value):
            return f"part_thresholds {part!r}: {_show(value)} is not a threshold within 0..1"
    if info.in_channels not in (1, 3) or isinstance(info.in_channels, bool):
        return f"in_channels {_show(info.in_channels)} is not 1 or 3"
    if not isinstance(info.tta, bool):
        return f"tta {_show(info.tta)} is not true or false"
    for key, record in (("recipe", Recipe), ("extra", ModelOrigin)):
        if not isinstance(getattr(info, key), dict | record | None):
            return f"{key} {_show(getattr(info, key))} is not an object"
    return None


def _recipe(data: dict[str, Any]) -> Recipe:
    """model.json's recipe object as a `Recipe` (keys a newer version added are left out;
    those missing in an older file take their defaults), or one BundleError line."""
    known = {f.name for f in fields(Recipe)}
    try:
        return Recipe.from_dict({k: v for k, v in data.items() if k in known})
    except (MuraError, TypeError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:120]
        raise BundleError(f"recipe {_show(data.get('name'))} is not a recipe ({reason})") from None


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module under DistributedDataParallel / torch.compile wrappers, and under
    `FlipTTA` (a bundle stores the network; its model.json says `tta`)."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    model = getattr(model, "_orig_mod", model)
    return unwrap(model.model) if isinstance(model, FlipTTA) else model


def save_bundle(folder: Path, model: nn.Module, info: ModelInfo) -> Path:
    """Write weights.pt + model.json into `folder` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    torch.save(state, folder / WEIGHTS)
    (folder / MODEL_JSON).write_text(json.dumps(info.to_json(), indent=2, sort_keys=True))
    return folder


def save_ensemble(folder: Path, models: list[nn.Module], info: ModelInfo) -> Path:
    """One bundle per member under `members/`, the shared model.json on top."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, model in enumerate(models):
        save_bundle(folder / MEMBERS / str(i), model, info)
    (folder / MODEL_JSON).write_text(json.dumps(info.to_json(), indent=2, sort_keys=True))
    return folder


def save_ensemble_folders(folder: Path, members: Sequence[Path], info: ModelInfo) -> Path:
    """An ensemble bundle of bundles already on disk: each copied (with its own model.json)
    under `members/`, the ensemble's `info` on top."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, member in enumerate(members):
        shutil.copytree(member, folder / MEMBERS / str(i))
    (folder / MODEL_JSON).write_text(json.dumps(info.to_json(), indent=2, sort_keys=True))
    return folder


def is_bundle(folder: Path) -> bool:
    """Whether `folder` holds a model bundle (its model.json; `read_info` checks the rest)."""
    return (Path(folder) / MODEL_JSON).is_file()


def save_models(folder: Path, models: list[nn.Module], info: ModelInfo) -> Path:
    """One model → a plain bundle; several → an ensemble bundle (probabilities averaged)."""
    if len(models) == 1:
        return save_bundle(folder, models[0], info)
    return save_ensemble(folder, models, info)


def write_info(folder: Path, info: ModelInfo) -> None:
    """Replace a bundle's model.json (and its members'), e.g. once the threshold is known."""
    text = json.dumps(info.to_json(), indent=2, sort_keys=True)
    for path in [folder / MODEL_JSON, *(folder / MEMBERS).glob(f"*/{MODEL_JSON}")]:
        path.write_text(text)


def _read_info_file(path: Path) -> ModelInfo:
    """A model.json, checked (see `ModelInfo`), or one BundleError line that names it."""
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise BundleError(f"{path} cannot be read: {exc.strerror or exc}") from exc
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8 text
        reason = " ".join(str(exc).split())[:120]
        raise BundleError(f"{path} refused: not JSON ({reason})") from None
    try:
        return ModelInfo.from_json(data)
    except BundleError as exc:
        raise BundleError(f"{path} refused: {exc}") from None


def read_info(folder: Path) -> ModelInfo:
    """A bundle's model.json alone (no weights loaded), checked; or one BundleError line."""
    return _read_info_file(Path(folder) / MODEL_JSON)


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _load_tensors(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load(weights_only=True)`: tensors, containers and numbers, never pickled code;
    any failure is one BundleError line naming the file (torch's text is left out: it
    advises loading the file unsafely)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _GLOBAL.search(str(exc))
        what = (
            f"a pickle carrying code or objects ({found.group(1)})"
            if found
            else "a pickle the tensors-only reader cannot read (code, objects or another format)"
        )
        raise BundleError(
            f"{path} refused: {what}, not a state dict of tensors; nothing in it was run"
        ) from None
    except OSError as exc:
        raise BundleError(f"{path} cannot be read: {exc.strerror or exc}") from exc
    except Exception as exc:  # foreign bytes fail with many types: RuntimeError, KeyError, ...
        raise BundleError(
            f"{path} refused: not a readable torch weights file (truncated, corrupt or "
            "another format)"
        ) from exc


def _few(keys: Sequence[str]) -> str:
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def _state_problem(state: object, own: Mapping[str, torch.Tensor], label: str) -> str | None:
    """Why `state` is not a plain state dict of tensors fitting a model whose own state dict
    is `own` (`label` names it), or None."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a state dict of tensors"
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            kind = type(value).__name__
            return f"it holds {_show(key)}: {kind}, not a state dict of tensors only"
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        return (
            f"its keys do not fit {label}: {len(missing)} missing ({_few(missing)}), "
            f"{len(unexpected)} unexpected ({_few(unexpected)})"
        )
    for key, mine in own.items():
        if state[key].shape != mine.shape:
            theirs = "x".join(map(str, state[key].shape)) or "scalar"
            need = "x".join(map(str, mine.shape)) or "scalar"
            return f"it does not fit {label}: {key} is {theirs}, the model's is {need}"
    return None


def load_weights(
    model: nn.Module,
    path: Path,
    *,
    map_location: str | torch.device = "cpu",
    label: str | None = None,
) -> None:
    """Load a weights file into `model`: only a plain state dict of tensors whose keys and
    shapes are the model's own; anything else is refused in one BundleError line."""
    state = _load_tensors(path, map_location)
    problem = _state_problem(state, model.state_dict(), label or type(model).__name__)
    if problem:
        raise BundleError(f"{path} refused: {problem}")
    model.load_state_dict(state)


def _build(info: ModelInfo, path: Path) -> nn.Module:
    """The (checked) model.json's model, or a BundleError when it cannot be built."""
    try:
        return build_model(info.model, size=info.size, in_channels=info.in_channels)
    except RuntimeError as exc:  # e.g. the seed CNN's 3 conv+pool stages at too small a size
        reason = " ".join(str(exc).split())[:120]
        raise BundleError(
            f"{path} refused: {info.model} cannot be built at {info.size}px ({reason})"
        ) from exc


def load_bundle(
    folder: Path, *, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelInfo]:
    """Rebuild the model (or ensemble) of a bundle folder, in eval mode, and its info; a
    refused or missing file is one BundleError line (see the module doc)."""
    folder = Path(folder)
    if (folder / MEMBERS).is_dir():
        info = _read_info_file(folder / MODEL_JSON)
        members = sorted(
            (p for p in (folder / MEMBERS).iterdir() if p.is_dir()),
            key=lambda p: int(p.name) if p.name.isdigit() else p.name,
        )
        loaded = [load_bundle(p, map_location=map_location) for p in members]
        return Ensemble([m for m, _ in loaded]).eval(), info
    if not (folder / MODEL_JSON).is_file() or not (folder / WEIGHTS).is_file():
        raise BundleError(f"{folder} is not a model bundle (needs {MODEL_JSON} and {WEIGHTS})")
    info = _read_info_file(folder / MODEL_JSON)
    model = _build(info, folder / MODEL_JSON)
    label = f"{info.model} at {info.size}px"
    load_weights(model, folder / WEIGHTS, map_location=map_location, label=label)
    return (FlipTTA(model) if info.tta else model).eval(), info


TRAIN_STATE = "train_state.pt"
HISTORY = "history.json"
EpochRow = EpochReport | PretrainEpochReport  # a history row: either run's report


@dataclass(frozen=True)
class TrainingState:
    """What a training checkpoint adds to its bundle: where to resume and how it went."""

    epoch: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    history: Sequence[EpochRow]  # every epoch so far, as reported (`history.json`)
    # with weight EMA the bundle holds the averaged weights (the model that is evaluated);
    # the trained weights and the EMA's update count are kept here to resume
    trained: dict[str, torch.Tensor] | None = None
    ema_updates: int = 0


def save_training_checkpoint(
    folder: Path, model: nn.Module, info: ModelInfo, state: TrainingState
) -> Path:
    """A bundle plus the optimizer/scheduler state (tensors and numbers) and the history."""
    save_bundle(folder, model, info)
    saved = {"epoch": state.epoch, "optimizer": state.optimizer, "scheduler": state.scheduler}
    if state.trained is not None:
        saved |= {"trained": state.trained, "ema_updates": state.ema_updates}
    torch.save(saved, folder / TRAIN_STATE)
    (folder / HISTORY).write_text(json.dumps([row.to_dict() for row in state.history]))
    return folder


def load_training_checkpoint(
    folder: Path, model: nn.Module, report: type[EpochRow] = EpochReport
) -> TrainingState:
    """Load a training checkpoint's weights into `model` (refused like a bundle's, one
    BundleError line); the rest is returned, its history as `report` rows."""
    folder = Path(folder)
    load_weights(model, folder / WEIGHTS)
    saved = _load_tensors(folder / TRAIN_STATE)
    if not isinstance(saved, dict) or not {"epoch", "optimizer", "scheduler"} <= saved.keys():
        raise BundleError(f"{folder / TRAIN_STATE} refused: not a training state")
    return TrainingState(
        epoch=int(saved["epoch"]),
        optimizer=saved["optimizer"],
        scheduler=saved["scheduler"] or {},
        history=read_history(folder, report),
        trained=saved.get("trained"),
        ema_updates=int(saved.get("ema_updates", 0)),
    )


def read_history(folder: Path, report: type[EpochRow] = EpochReport) -> list[EpochRow]:
    """The per-epoch rows a training checkpoint carries (`mura train`'s `EpochReport`s,
    or `mura pretrain`'s `PretrainEpochReport`s)."""
    rows = json.loads((Path(folder) / HISTORY).read_text())
    return [report.from_dict(row) for row in rows]
