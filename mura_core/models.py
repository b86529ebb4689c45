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

Initial weights (`--weights imagenet | none | FILE`) are `mura_core.initial_weights`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from mura_core.errors import ConfigError
from mura_core.initial_weights import WeightsError, load_pretrained

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


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


def torchvision_net(name: str) -> nn.Module:
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
    net = torchvision_net(name)
    if weights is not None:
        load_pretrained(net, weights)
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
