"""Model registry: the seed paper's CNN, DenseNet-169, and other torchvision backbones by name.

Every model takes (B, 3, S, S) floats and returns (B,) logits: one output with a sigmoid,
which equals the seed's 2-way softmax (softmax([a, b])[1] = sigmoid(b - a)) with half the
output parameters. `build_model(name, size=..., weights=...)` is the only constructor the
pipelines call; a checkpoint stores the name and size (as JSON), never a pickled object.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

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
    """A torchvision classifier with its last layer replaced by one logit."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


# torchvision's old DenseNet checkpoints name layers 'norm.1' where the module has 'norm1'
_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def _load_imagenet(net: nn.Module, weights: Path) -> None:
    """Load a local ImageNet state_dict (nothing is downloaded), skipping the old head."""
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    fixed = {}
    for key, value in state.items():
        match = _DENSENET_KEY.match(key)
        fixed[match.group(1) + match.group(2) if match else key] = value
    own = net.state_dict()
    usable = {k: v for k, v in fixed.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in usable]
    if len(usable) < len(own) // 2:
        raise ValueError(
            f"{weights} does not fit this network ({len(usable)} of {len(own)} "
            "tensors match): is it the right architecture?"
        )
    net.load_state_dict(usable, strict=False)
    log.info(
        "loaded ImageNet weights from %s (%d tensors; new: %s)",
        weights,
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
    raise ValueError(f"{type(net).__name__}: no final Linear layer to replace")


def torchvision_backbone(name: str, *, weights: Path | None = None) -> nn.Module:
    """Any torchvision classification model by name (densenet169, resnet50, ...), 1 logit.

    ImageNet initialisation only from a local file (nothing is downloaded); without one the
    weights are random (the training driver says so).
    """
    import torchvision  # here: its import costs ~1.5 s, paid only by models that need it

    try:
        net = torchvision.models.get_model(name, weights=None)
    except ValueError as exc:
        raise ValueError(f"unknown model {name!r}: {exc}") from exc
    if weights is not None:
        _load_imagenet(net, Path(weights))
    return Backbone(_replace_head(net))


_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "cnn": lambda *, size, weights=None: SeedCNN(size=size),
    "densenet169": lambda *, size, weights=None: torchvision_backbone(
        "densenet169", weights=weights
    ),
}


def model_names() -> list[str]:
    """Registered names; any other torchvision classification model works too."""
    return sorted(_REGISTRY)


def build_model(name: str, *, size: int, weights: str | Path | None = None) -> nn.Module:
    """The model called `name` for (3, size, size) inputs."""
    if name in _REGISTRY:
        if name == "cnn" and weights is not None:
            raise ValueError("the seed CNN has no pretrained weights: drop --weights")
        return _REGISTRY[name](size=size, weights=weights)
    import torchvision

    if name in torchvision.models.list_models(module=torchvision.models):
        return torchvision_backbone(name, weights=Path(weights) if weights else None)
    raise ValueError(
        f"unknown model {name!r}: choose {', '.join(model_names())} or a "
        "torchvision classification model name"
    )


def cam_target(model: nn.Module) -> nn.Module:
    """The last convolutional feature block, where class activation maps are taken."""
    if isinstance(model, SeedCNN):
        return model.features
    net = getattr(model, "net", model)
    if hasattr(net, "features"):
        return net.features
    if hasattr(net, "layer4"):
        return net.layer4
    raise ValueError(f"no known feature block in {type(net).__name__} for CAM")
