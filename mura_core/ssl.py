"""Self-supervised pretraining of an encoder on unlabeled radiographs: VICReg.

The method is VICReg (Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance
Regularization for Self-Supervised Learning", ICLR 2022, arXiv:2105.04906). Two augmented
views of each image go through the encoder and a projector (the "expander"); the loss is

    λ·invariance (MSE between the two views' embeddings)
  + μ·variance   (hinge keeping each embedding dimension's std over the batch ≥ γ)
  + ν·covariance (squared off-diagonal covariances, pushing dimensions to decorrelate)

with the paper's λ = μ = 25, ν = 1, γ = 1, ε = 1e-4.

Why VICReg, for a site with a PACS full of unlabeled films and a CPU or one GPU:
- no negatives: SimCLR's contrastive loss needs thousands of images per batch (or MoCo's
  queue and momentum encoder) to have enough negatives; VICReg's terms are per-dimension
  batch statistics, meaningful from a few dozen images, so the batch one CPU or one GPU
  holds is enough (it needs ≥ 2 images a batch);
- no second network: BYOL, MoCo v3 and DINO keep a momentum (EMA) teacher — twice the
  weights in memory and an extra schedule — and DINO adds multi-crop and centering; SimSiam
  is as light but relies on the stop-gradient and predictor alone to avoid collapse;
- collapse is prevented explicitly and *measured*: the variance term is ~1 when every image
  gets the same embedding and 0 when each dimension spreads, so collapse shows in the
  per-epoch metrics (MLflow) rather than only later as a useless encoder;
- it scales out: on several workers the embeddings are gathered before the variance and
  covariance are taken (the paper's own FullGatherLayer), which is the same loss on the
  global batch.

The two views come from `TrainPreset` (`ssl_preset`: random resized crop, small rotation,
horizontal flip, gamma and contrast — a radiograph's own variation: framing, exposure,
detector curve, window width), the same augmentation code the classifiers train with.

The encoder is a `build_model` backbone with its head removed (`SSLModel`), one-channel stem
for gray films. `encoder_state` gives its tensors in the key names a `--weights FILE` uses
(torchvision's own, as `mura_core.initial_weights` checks them), the head left out
and the stem widened back to three channels (its kernel ÷ 3 per channel: on a gray image
replicated to three channels it computes exactly what the one-channel stem did, and a
one-channel recipe sums it back), so any recipe of that architecture starts from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from mura_core.errors import ConfigError
from mura_core.models import Backbone, build_model
from mura_core.transforms import IMAGENET_MEAN, IMAGENET_STD, TrainPreset

if TYPE_CHECKING:
    from mura_core.model_info import ModelOrigin

METHOD = "vicreg"
ENCODER_KIND = "encoder"  # model.json `extra.kind` of a pretrained encoder bundle
ENCODER_FILE = "encoder.pt"  # beside weights.pt: the `--weights FILE` state dict
# ImageNet's statistics averaged over the channels: one gray channel normalized like the
# three ImageNet channels are on average
GRAY_MEAN = (sum(IMAGENET_MEAN) / 3,) * 3
GRAY_STD = (sum(IMAGENET_STD) / 3,) * 3
HEAD_ATTRIBUTES = ("classifier", "fc", "heads")  # where torchvision keeps the final Linear


def ssl_preset(size: int, *, channels: int = 1) -> TrainPreset:
    """The augmentation each view is drawn with: a radiograph's variation, not ImageNet's
    (no colour jitter, no vertical flip: a film upside down is not another film)."""
    return TrainPreset(
        size=size,
        rotation_deg=10.0,
        hflip=True,
        crop_scale=(0.25, 1.0),
        gamma=0.5,
        contrast=0.3,
        mean=GRAY_MEAN,
        std=GRAY_STD,
        channels=channels,
    )


def two_views(
    preset: TrainPreset, images: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independently augmented views of the same batch (uint8 (B, S, S) in)."""
    return preset(images, generator), preset(images, generator)


@dataclass(frozen=True)
class VICRegTerms:
    """The loss and its three unweighted terms (tensors; `loss` carries the gradient)."""

    loss: torch.Tensor
    invariance: torch.Tensor
    variance: torch.Tensor
    covariance: torch.Tensor

    def floats(self) -> dict[str, float]:
        return {k: float(getattr(self, k).detach()) for k in VICREG_TERMS}


VICREG_TERMS = ("loss", "invariance", "variance", "covariance")


def _off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    n = matrix.shape[0]
    return matrix.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def _variance_term(z: torch.Tensor, gamma: float, eps: float) -> torch.Tensor:
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(gamma - std).mean()


def _covariance_term(z: torch.Tensor) -> torch.Tensor:
    n, d = z.shape
    centred = z - z.mean(dim=0)
    cov = (centred.T @ centred) / (n - 1)
    return _off_diagonal(cov).pow(2).sum() / d


def vicreg_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    *,
    invariance_weight: float = 25.0,
    variance_weight: float = 25.0,
    covariance_weight: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
) -> VICRegTerms:
    """VICReg on two (N, D) embedding batches (row i of each: the same image), N ≥ 2.

    The variance and covariance terms are averaged over the two branches, as in the paper's
    code; computed in float32 whatever the autocast dtype."""
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"two (N, D) batches of one shape expected, got {z1.shape}, {z2.shape}")
    if z1.shape[0] < 2:
        raise ValueError("VICReg's variance and covariance need at least 2 images per batch")
    z1, z2 = z1.float(), z2.float()
    invariance = F.mse_loss(z1, z2)
    variance = (_variance_term(z1, gamma, eps) + _variance_term(z2, gamma, eps)) / 2
    covariance = _covariance_term(z1) + _covariance_term(z2)
    loss = (
        invariance_weight * invariance + variance_weight * variance + covariance_weight * covariance
    )
    return VICRegTerms(loss, invariance, variance, covariance)


def projector(in_features: int, dim: int = 2048, layers: int = 3) -> nn.Sequential:
    """The VICReg expander: (Linear, BatchNorm, ReLU) × (layers − 1), then a Linear."""
    if layers < 1 or dim < 2:
        raise ConfigError("the projector needs >= 1 layer and >= 2 dimensions")
    blocks: list[nn.Module] = []
    width = in_features
    for _ in range(layers - 1):
        blocks += [nn.Linear(width, dim), nn.BatchNorm1d(dim), nn.ReLU(inplace=True)]
        width = dim
    blocks.append(nn.Linear(width, dim, bias=False))
    return nn.Sequential(*blocks)


def _head(net: nn.Module) -> tuple[str, nn.Module] | None:
    """(state-dict prefix, module) of a torchvision network's final Linear, or None."""
    for attr in HEAD_ATTRIBUTES:
        head = getattr(net, attr, None)
        if isinstance(head, nn.Linear):
            return attr, head
        if isinstance(head, nn.Sequential) and isinstance(head[-1], nn.Linear):
            return f"{attr}.{len(head) - 1}", head[-1]
    return None


def remove_head(backbone: Backbone) -> int:
    """Replace the backbone's final Linear by an identity (its output: the pooled
    features); the number of features."""
    found = _head(backbone.net)
    if found is None:
        raise ConfigError(f"{type(backbone.net).__name__}: no final Linear layer to remove")
    path, head = found
    parent, _, attr = path.rpartition(".")
    setattr(backbone.net.get_submodule(parent) if parent else backbone.net, attr, nn.Identity())
    return head.in_features


class SSLModel(nn.Module):
    """Encoder (a headless `build_model` backbone) + projector; forward gives embeddings."""

    def __init__(self, encoder: Backbone, projector_head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = projector_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))


def build_ssl_model(
    name: str, *, size: int, projector_dim: int = 2048, in_channels: int = 1
) -> SSLModel:
    """`build_model(name, size=, in_channels=)` without its head, and a VICReg projector."""
    if name == "cnn":
        raise ConfigError(
            "the seed CNN takes no pretrained weights (mura train refuses --weights for it): "
            "pretrain a torchvision backbone, e.g. --model resnet18"
        )
    backbone = build_model(name, size=size, in_channels=in_channels)
    if not isinstance(backbone, Backbone):
        raise ConfigError(f"{name}: not a torchvision backbone, cannot be pretrained")
    features = remove_head(backbone)
    return SSLModel(backbone, projector(features, projector_dim))


def _stem_key(net: nn.Module) -> str:
    """The state-dict key of the network's first convolution's kernel (its stem)."""
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d):
            return f"{name}.weight"
    raise ConfigError(f"{type(net).__name__}: no convolution")


def encoder_state(model: SSLModel | Backbone) -> dict[str, torch.Tensor]:
    """The encoder's tensors as a `--weights FILE` holds them: torchvision's key names
    (no `net.` prefix), no head, a three-channel stem (a one-channel kernel ÷ 3 on each
    channel: the same output on a gray image replicated to 3 channels). Copies, on CPU."""
    backbone = model.encoder if isinstance(model, SSLModel) else model
    net = backbone.net
    found = _head(net)
    head = f"{found[0]}." if found else None
    state = {
        key: value.detach().cpu().clone()
        for key, value in net.state_dict().items()
        if head is None or not key.startswith(head)
    }
    stem = _stem_key(net)
    kernel = state[stem]
    if kernel.shape[1] == 1:
        state[stem] = (kernel / 3).expand(-1, 3, -1, -1).contiguous()
    return state


def placeholder_classifier(name: str, *, size: int, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """The `build_model` classifier holding the encoder's tensors, its head all zeros (every
    output 0.5): what a bundle's weights.pt must fit, never a screening model — model.json's
    `extra.kind` says `encoder`, and a classifier is trained from it with `--weights`."""
    model = build_model(name, size=size, weights=dict(state))
    found = _head(model.net) if isinstance(model, Backbone) else None
    if found is None:
        raise ConfigError(f"{name}: no final Linear layer")
    with torch.no_grad():
        for parameter in found[1].parameters():
            parameter.zero_()
    return model


def is_encoder(extra: ModelOrigin | None) -> bool:
    """Whether a model.json's `extra` marks a pretrained encoder (not a classifier)."""
    return extra is not None and extra.kind == ENCODER_KIND


@torch.no_grad()
def embedding_std(z: torch.Tensor) -> float:
    """Mean per-dimension std of the L2-normalized embeddings: ~1/sqrt(D) when spread,
    0 when collapsed (the collapse monitor of SimSiam and VICReg)."""
    return float(F.normalize(z.float(), dim=1).std(dim=0).mean())
