"""Initial weights, as the papers did it: a `--weights` spec is `imagenet` (torchvision's own
`IMAGENET1K_V1` entry for the network, read from the torch hub cache, `$TORCH_HOME/hub/
checkpoints/`, or downloaded there), `none` (random init) or a state_dict FILE.
`initial_weights(spec, model)` resolves it on the driver, before any worker starts: it finds
or fetches the file, loads it once, checks it against the architecture and returns the
tensors (and the line the run logs), or raises one `WeightsError` line that says what to do.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
import socket
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mura_core.errors import MuraError

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

log = logging.getLogger(__name__)

IMAGENET = "imagenet"
RANDOM_INIT = "none"
DOWNLOAD_TIMEOUT_S = 30.0  # per socket operation: a stalled network fails, a slow one goes on


class WeightsError(MuraError):
    """Initial weights that cannot be had or do not fit; the line says what to do instead."""


# torchvision's old DenseNet checkpoints name layers 'norm.1' where the module has 'norm1'
_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict file (tensors only: `weights_only=True`), or a one-line WeightsError."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        reason = " ".join(str(exc).split())[:160]
        raise WeightsError(f"{path} is not a readable state_dict file: {reason}") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state_dict")
    return state


def _fit_state(net: nn.Module, state: Mapping[str, Any], source: str) -> dict[str, torch.Tensor]:
    """The tensors of `state` that fit `net` (old DenseNet key names remapped; the ImageNet
    head, whose shape differs, left out), or a WeightsError when most of them do not."""
    fixed = {}
    for key, value in state.items():
        match = _DENSENET_KEY.match(key)
        fixed[match.group(1) + match.group(2) if match else key] = value
    own = net.state_dict()
    usable = {
        k: v
        for k, v in fixed.items()
        if k in own and isinstance(v, torch.Tensor) and own[k].shape == v.shape
    }
    if len(usable) < len(own) // 2:
        raise WeightsError(
            f"{source} does not fit {type(net).__name__} ({len(usable)} of {len(own)} "
            "tensors match): is it the right architecture?"
        )
    return usable


def load_pretrained(net: nn.Module, weights: Path | Mapping[str, torch.Tensor]) -> None:
    """Load ImageNet tensors (a local file, or a state_dict resolved on the driver)."""
    source = str(weights) if isinstance(weights, str | Path) else "the ImageNet state_dict"
    state = _read_state(Path(weights)) if isinstance(weights, str | Path) else weights
    usable = _fit_state(net, state, source)
    net.load_state_dict(usable, strict=False)
    missing = [k for k in net.state_dict() if k not in usable]
    log.info(
        "loaded ImageNet weights from %s (%d tensors; new: %s)",
        source,
        len(usable),
        ", ".join(missing) or "none",
    )


@dataclass(frozen=True, eq=False)
class InitialWeights:
    """A `--weights` spec resolved on the driver: the line the run logs and prints, and the
    ImageNet tensors (torchvision key names, checked against the network; None: random)."""

    label: str
    state: dict[str, torch.Tensor] | None = None


def imagenet_entry(model: str) -> WeightsEnum:
    """torchvision's ImageNet-1k weights entry for `model` (`DenseNet169_Weights.IMAGENET1K_V1`)."""
    import torchvision

    try:
        entry = getattr(torchvision.models.get_model_weights(model), "IMAGENET1K_V1", None)
    except (ValueError, KeyError):
        entry = None
    if entry is None:
        raise WeightsError(
            f"torchvision has no IMAGENET1K_V1 weights for {model!r}: "
            "pass --weights FILE or --weights none (random init)"
        )
    return entry


def imagenet_file(entry: WeightsEnum) -> Path:
    """The entry's file in the torch hub cache ($TORCH_HOME/hub/checkpoints), downloaded there
    when missing; where neither works, one line naming the file, the folder and the URL."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    name = Path(urllib.parse.urlparse(entry.url).path).name
    path = folder / name
    if path.is_file():
        return path
    hash_match = torch.hub.HASH_REGEX.search(name)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        log.warning("downloading %s to %s", entry.url, path)
        folder.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(
            entry.url, str(path), hash_prefix=hash_match.group(1) if hash_match else None
        )
    except (OSError, RuntimeError) as exc:  # URLError, timeouts, refused, hash mismatch
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise WeightsError(
            f"ImageNet weights {name} are not in {folder} and could not be downloaded "
            f"({reason}): put {name} (from {entry.url}) in {folder}, "
            "or pass --weights FILE, or --weights none (random init)"
        ) from exc
    finally:
        socket.setdefaulttimeout(previous)
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def initial_weights(spec: str, model: str) -> InitialWeights:
    """`imagenet` | `none` | a FILE → the checked tensors and their label, or a WeightsError.

    Done once, on the driver: workers get the tensors, never a path on the driver's disk.
    """
    if spec == RANDOM_INIT:
        return InitialWeights("none (random init)")
    if model == "cnn":
        raise WeightsError(
            f"the seed CNN has no pretrained weights (--weights {spec}): pass --weights none"
        )
    if spec == IMAGENET:
        entry = imagenet_entry(model)
        path = imagenet_file(entry)
        label = f"imagenet ({type(entry).__name__}.{entry.name})"
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"weights file not found: {spec} (--weights takes imagenet, none or a file)"
            )
        label = f"file {path.name} sha256 {_sha256(path)[:16]}"
    from mura_core.models import torchvision_net  # the bare network, to check the tensors against

    state = _fit_state(torchvision_net(model), _read_state(path), str(path))
    return InitialWeights(label, state)
