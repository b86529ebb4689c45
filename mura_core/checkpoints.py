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
import pickle
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mura_core.model_info import BundleError, ModelInfo, show_value
from mura_core.models import Ensemble, FlipTTA, build_model
from mura_core.run_contract import EpochReport, PretrainEpochReport

WEIGHTS = "weights.pt"
MODEL_JSON = "model.json"
MEMBERS = "members"


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
            return f"it holds {show_value(key)}: {kind}, not a state dict of tensors only"
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
