"""Model registry: the seed paper's CNN, DenseNet-169, and other torchvision backbones by name.

Every model takes (B, 3, S, S) floats and returns (B,) logits: one output with a sigmoid,
which equals the seed's 2-way softmax (softmax([a, b])[1] = sigmoid(b - a)) with half the
output parameters. `build_model(name, size=..., weights=...)` is the only constructor the
pipelines call; a checkpoint stores the name and size (as JSON), never a pickled object.
`Ensemble` averages its members' probabilities (the MURA paper's 5 best checkpoints).

Grayscale from scratch: `build_model(..., in_channels=1)` gives a torchvision backbone whose
stem (the first convolution: resnet `conv1`, densenet `features.conv0`, efficientnet
`features.0.0`) takes one channel, its kernel the sum of the 3-channel kernel over the input
channels: on a gray image replicated to 3 channels it computes exactly what the 3-channel
network does (so ImageNet weights, when there are any, carry over), with a third of the
stem's input work. It also accepts (B, 3, S, S) (the channels averaged), so the existing
3-channel presets still feed it. `FlipTTA` averages the probabilities of an image and its
mirror (test-time augmentation), as a module a bundle can hold.

Initial weights, as the papers did it: a `--weights` spec is `imagenet` (torchvision's own
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .errors import ConfigError, MuraError

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

log = logging.getLogger(__name__)

IMAGENET = "imagenet"
RANDOM_INIT = "none"
DOWNLOAD_TIMEOUT_S = 30.0  # per socket operation: a stalled network fails, a slow one goes on


class WeightsError(MuraError):
    """Initial weights that cannot be had or do not fit; the line says what to do instead."""


class SeedCNN(nn.Module):
    """The course paper's network: conv 32/64/128 (3×3, ReLU) each with 2×2 max-pool,
    flatten, dense 64 and 128 (ReLU), dropout before the one-logit output.

    Keras defaults as in the paper: 'valid' padding, so the flatten size follows the input
    size (224 → 26×26×128), and Glorot-uniform weights with zero biases — with PyTorch's
    default init this network measured stuck at chance on synthetic data, with Keras's it
    learns.
    """

    def __init__(self, size: int = 224, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, 3, size, size)).numel()
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, 64),
            nn.ReLU(inplace=True),
            nn.Linear(64, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(128, 1),
        )

        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x)).squeeze(-1)


class Backbone(nn.Module):
    """A torchvision classifier with its last layer replaced by one logit.

    `in_channels=1`: the stem was made one-channel (`one_channel_stem`); a 3-channel input
    (gray replicated by a 3-channel preset) is averaged to one channel first."""

    def __init__(self, net: nn.Module, in_channels: int = 3) -> None:
        super().__init__()
        self.net = net
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 1 and x.shape[1] == 3:
            x = x.mean(1, keepdim=True)
        return self.net(x).squeeze(-1)


class FlipTTA(nn.Module):
    """Test-time augmentation: the mean of the probabilities of x and its left-right mirror,
    returned as a logit (kept off 0 and 1), so it drops in wherever a model's logits go.

    Its state_dict is the wrapped model's with a `model.` prefix (no parameters of its own).
    For radiographs a mirror is another valid film (left and right limbs, either
    orientation on the detector); up and down are not, so only x.flip(-1) is averaged."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = [torch.sigmoid(self.model(v).float()) for v in (x, x.flip(-1))]
        return torch.logit(Ensemble.combine(probs))


class Ensemble(nn.Module):
    """Average of member probabilities (MURA: the 5 best checkpoints), returned as a logit."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    @staticmethod
    def combine(probabilities: Sequence[torch.Tensor]) -> torch.Tensor:
        """The ensemble's probability from its members' (the mean, kept off 0 and 1)."""
        return torch.stack([p.float() for p in probabilities]).mean(0).clamp(1e-7, 1 - 1e-7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logit(self.combine([torch.sigmoid(m(x).float()) for m in self.members]))


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


def _load_pretrained(net: nn.Module, weights: Path | Mapping[str, torch.Tensor]) -> None:
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


def _replace_head(net: nn.Module) -> nn.Module:
    """Swap the final Linear (classifier / fc / heads) for a 1-logit one."""
    for attr in ("classifier", "fc", "heads"):
        head = getattr(net, attr, None)
        if isinstance(head, nn.Linear):
            setattr(net, attr, nn.Linear(head.in_features, 1))
            return net
        if isinstance(head, nn.Sequential) and isinstance(head[-1], nn.Linear):
            head[-1] = nn.Linear(head[-1].in_features, 1)
            return net
    raise ConfigError(f"{type(net).__name__}: no final Linear layer to replace")


def _torchvision_net(name: str) -> nn.Module:
    """The bare torchvision network (its ImageNet head), random init."""
    import torchvision  # here: its import costs ~1.5 s, paid only by models that need it

    try:
        return torchvision.models.get_model(name, weights=None)
    except ValueError as exc:
        raise ConfigError(f"unknown model {name!r}: {exc}") from exc


def one_channel_stem(net: nn.Module) -> nn.Module:
    """Replace the network's first Conv2d (its stem: torchvision builds it first) by a
    one-channel copy whose kernel is the old one summed over its input channels."""
    found = next(((n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d)), None)
    if found is None:
        raise ConfigError(f"{type(net).__name__}: no convolution to make one-channel")
    name, module = found
    if module.in_channels == 1:
        return net
    if module.groups != 1:
        raise ConfigError(f"{type(net).__name__}: the first convolution is grouped")
    stem = nn.Conv2d(
        1,
        module.out_channels,
        module.kernel_size,  # type: ignore[arg-type]
        stride=module.stride,  # type: ignore[arg-type]
        padding=module.padding,  # type: ignore[arg-type]
        dilation=module.dilation,  # type: ignore[arg-type]
        bias=module.bias is not None,
        padding_mode=module.padding_mode,
    )
    with torch.no_grad():
        stem.weight.copy_(module.weight.sum(1, keepdim=True))
        if module.bias is not None:
            stem.bias.copy_(module.bias)  # type: ignore[union-attr]
    parent_name, _, attr = name.rpartition(".")
    setattr(net.get_submodule(parent_name) if parent_name else net, attr, stem)
    return net


def torchvision_backbone(
    name: str,
    *,
    weights: Path | Mapping[str, torch.Tensor] | None = None,
    in_channels: int = 3,
) -> nn.Module:
    """Any torchvision classification model by name (densenet169, resnet50, ...), 1 logit,
    from the ImageNet tensors in `weights` (a file or a state_dict) or random init (None);
    `in_channels=1` makes its stem one-channel (after the weights are loaded)."""
    if in_channels not in (1, 3):
        raise ConfigError(f"in_channels must be 1 (grayscale) or 3, got {in_channels}")
    net = _torchvision_net(name)
    if weights is not None:
        _load_pretrained(net, weights)
    net = _replace_head(net)
    if in_channels == 1:  # last: the same seed gives the 3-channel network's weights
        one_channel_stem(net)
    return Backbone(net, in_channels=in_channels)


def _torchvision_entry(name: str) -> Callable[..., nn.Module]:
    return lambda *, size, weights=None, in_channels=3: torchvision_backbone(
        name, weights=weights, in_channels=in_channels
    )


def _seed_cnn(*, size: int, weights: object = None, in_channels: int = 3) -> nn.Module:
    if in_channels != 3:
        raise ConfigError("the seed CNN takes 3 channels (the paper's network)")
    return SeedCNN(size=size)


# the papers' networks, and the from-scratch candidates measured on FracAtlas
# (bench/ablation.py); any other torchvision classification model works by name too
_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "cnn": _seed_cnn,
    **{
        name: _torchvision_entry(name)
        for name in ("densenet121", "densenet169", "efficientnet_b0", "resnet18", "resnet34")
    },
}


def model_names() -> list[str]:
    """Registered names; any other torchvision classification model works too."""
    return sorted(_REGISTRY)


def is_model_name(name: object) -> bool:
    """Whether `build_model` knows `name`: a registered name or a torchvision classification
    model (torchvision is imported only for a name outside the registry)."""
    if not isinstance(name, str):
        return False
    if name in _REGISTRY:
        return True
    import torchvision

    return name in torchvision.models.list_models(module=torchvision.models)


def build_model(
    name: str,
    *,
    size: int,
    weights: str | Path | Mapping[str, torch.Tensor] | None = None,
    in_channels: int = 3,
) -> nn.Module:
    """The model called `name` for (in_channels, size, size) inputs; `weights` is a
    state_dict FILE or the tensors `initial_weights` resolved (None: random init);
    `in_channels=1`: a one-channel stem for grayscale (torchvision backbones)."""
    if isinstance(weights, str):
        weights = Path(weights)
    if name in _REGISTRY:
        if name == "cnn" and weights is not None:
            raise WeightsError("the seed CNN has no pretrained weights: pass --weights none")
        return _REGISTRY[name](size=size, weights=weights, in_channels=in_channels)
    import torchvision

    if name in torchvision.models.list_models(module=torchvision.models):
        return torchvision_backbone(name, weights=weights, in_channels=in_channels)
    raise ConfigError(
        f"unknown model {name!r}: choose {', '.join(model_names())} or a "
        "torchvision classification model name"
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
    state = _fit_state(_torchvision_net(model), _read_state(path), str(path))
    return InitialWeights(label, state)
