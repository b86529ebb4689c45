"""Checkpoint and model-bundle format: tensors in one file, configuration as JSON.

A folder with `weights.pt` (a state_dict of tensors, read back with `weights_only=True`, so
loading a checkpoint never runs pickled code) and `model.json` (model name, input size,
normalization, threshold, recipe). Training checkpoints add `train_state.pt` (optimizer and
scheduler state, tensors and numbers only) and `history.json`. The same folder layout is
shipped inside every logged MLflow model, which is how screening rebuilds a model.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import MuraError
from .models import Ensemble, build_model  # Ensemble: also imported from here
from .recipes import Recipe
from .transforms import EvalPreset

WEIGHTS = "weights.pt"
MODEL_JSON = "model.json"
MEMBERS = "members"
FORMAT_VERSION = 1


class BundleError(MuraError, ValueError):
    """A folder that is not a model bundle, or a bundle of another format version."""


@dataclass(frozen=True)
class ModelInfo:
    """What is needed to rebuild and feed a model, and to interpret its output."""

    model: str
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    threshold: float = 0.5
    recipe: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None
    temperature: float = 1.0  # logits are divided by it (temperature scaling; 1: none)
    part_thresholds: dict[str, float] | None = None  # per body part; others: `threshold`

    def threshold_for(self, body_part: str | None) -> float:
        """The operating threshold of a study of this body part."""
        return (self.part_thresholds or {}).get(body_part or "", self.threshold)

    def eval_preset(self) -> EvalPreset:
        return EvalPreset(size=self.size, mean=self.mean, std=self.std)

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "model": self.model,
            "size": self.size,
            "mean": list(self.mean),
            "std": list(self.std),
            "threshold": self.threshold,
            "recipe": self.recipe,
            "extra": self.extra or {},
            "temperature": self.temperature,
            "part_thresholds": dict(self.part_thresholds or {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelInfo:
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleError(f"model bundle format {version!r} is not {FORMAT_VERSION}")
        return cls(
            model=data["model"],
            size=int(data["size"]),
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
            threshold=float(data.get("threshold", 0.5)),
            recipe=data.get("recipe"),
            extra=data.get("extra") or {},
            temperature=float(data.get("temperature", 1.0)),
            part_thresholds={
                str(k): float(v) for k, v in (data.get("part_thresholds") or {}).items()
            }
            or None,
        )

    @classmethod
    def from_recipe(cls, recipe: Recipe, **kwargs: Any) -> ModelInfo:
        return cls(
            model=recipe.model,
            size=recipe.size,
            mean=recipe.mean,
            std=recipe.std,
            recipe=recipe.to_dict(),
            **kwargs,
        )


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module under DistributedDataParallel / torch.compile wrappers."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return getattr(model, "_orig_mod", model)


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


def read_info(folder: Path) -> ModelInfo:
    """A bundle's model.json alone (no weights loaded)."""
    return ModelInfo.from_json(json.loads((Path(folder) / MODEL_JSON).read_text()))


def load_bundle(
    folder: Path, *, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelInfo]:
    """Rebuild the model (or ensemble) of a bundle folder, in eval mode, and its info."""
    folder = Path(folder)
    if (folder / MEMBERS).is_dir():
        members = sorted(
            (p for p in (folder / MEMBERS).iterdir() if p.is_dir()),
            key=lambda p: int(p.name) if p.name.isdigit() else p.name,
        )
        loaded = [load_bundle(p, map_location=map_location) for p in members]
        info = ModelInfo.from_json(json.loads((folder / MODEL_JSON).read_text()))
        return Ensemble([m for m, _ in loaded]).eval(), info
    if not (folder / MODEL_JSON).is_file() or not (folder / WEIGHTS).is_file():
        raise BundleError(f"{folder} is not a model bundle (needs {MODEL_JSON} and {WEIGHTS})")
    info = ModelInfo.from_json(json.loads((folder / MODEL_JSON).read_text()))
    model = build_model(info.model, size=info.size)
    state = torch.load(folder / WEIGHTS, map_location=map_location, weights_only=True)
    model.load_state_dict(state)
    return model.eval(), info


TRAIN_STATE = "train_state.pt"
HISTORY = "history.json"


@dataclass(frozen=True)
class TrainingState:
    """What a training checkpoint adds to its bundle: where to resume and how it went."""

    epoch: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    history: list[dict[str, float]]


def save_training_checkpoint(
    folder: Path, model: nn.Module, info: ModelInfo, state: TrainingState
) -> Path:
    """A bundle plus the optimizer/scheduler state (tensors and numbers) and the history."""
    save_bundle(folder, model, info)
    torch.save(
        {"epoch": state.epoch, "optimizer": state.optimizer, "scheduler": state.scheduler},
        folder / TRAIN_STATE,
    )
    (folder / HISTORY).write_text(json.dumps(state.history))
    return folder


def load_training_checkpoint(folder: Path, model: nn.Module) -> TrainingState:
    """Load a training checkpoint's weights into `model`; the rest is returned."""
    folder = Path(folder)
    model.load_state_dict(torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True))
    saved = torch.load(folder / TRAIN_STATE, map_location="cpu", weights_only=True)
    return TrainingState(
        epoch=int(saved["epoch"]),
        optimizer=saved["optimizer"],
        scheduler=saved["scheduler"] or {},
        history=read_history(folder),
    )


def read_history(folder: Path) -> list[dict[str, float]]:
    """The per-epoch metrics a training checkpoint carries."""
    return json.loads((Path(folder) / HISTORY).read_text())
