"""Train and eval presets, shared by training, evaluation and screening.

Input everywhere is what the shards hold: uint8 grayscale (B, S, S) or (B, 1, S, S). Output is
float (B, 3, size, size), normalized — three channels because both papers feed 3-channel
networks (DenseNet's ImageNet weights expect them). Augmentation is one batched affine warp
per call (rotation, shift, shear, zoom and flips folded into one matrix per image, applied by
a single `grid_sample`), with randomness from a caller-supplied `torch.Generator`, never the
global seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
UNIT_MEAN = (0.0, 0.0, 0.0)  # the seed paper (Keras): pixels / 255, no standardization
UNIT_STD = (1.0, 1.0, 1.0)


def _as_float(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B, S, S) or (B, 1, S, S) → float (B, 1, size, size) in [0, 1]."""
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"expected (B, S, S) or (B, 1, S, S) grayscale, got {tuple(images.shape)}")
    out = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    if out.shape[-1] != size or out.shape[-2] != size:
        out = F.interpolate(
            out, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    return out


def _normalize(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """(B, 1, H, W) → normalized (B, 3, H, W); gray in, so equal channel statistics are
    computed once and broadcast (a view, no copy)."""
    if len(set(mean)) == 1 and len(set(std)) == 1:
        out = images if (mean[0], std[0]) == (0.0, 1.0) else (images - mean[0]) / std[0]
        return out.expand(-1, 3, -1, -1)
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - m) / s


@dataclass(frozen=True, kw_only=True)
class EvalPreset:
    """Resize to `size`, replicate to 3 channels, normalize. No randomness."""

    size: int
    mean: tuple[float, float, float] = UNIT_MEAN
    std: tuple[float, float, float] = UNIT_STD

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return _normalize(_as_float(images, self.size), self.mean, self.std)


@dataclass(frozen=True, kw_only=True)
class TrainPreset:
    """Random affine (Keras ImageDataGenerator semantics) + flips, then as EvalPreset.

    rotation_deg: ±degrees; shift: ± fraction of width/height; shear_deg: ± degrees (Keras's
    `shear_range` is in degrees); zoom: scale drawn from [1 - zoom, 1 + zoom]; hflip / vflip:
    probability 0.5 each when True. Areas moved in from outside the film are black (air).
    """

    size: int
    rotation_deg: float = 0.0
    shift: float = 0.0
    shear_deg: float = 0.0
    zoom: float = 0.0
    hflip: bool = False
    vflip: bool = False
    mean: tuple[float, float, float] = UNIT_MEAN
    std: tuple[float, float, float] = UNIT_STD

    def eval_preset(self) -> EvalPreset:
        """The matching deterministic preset (same size and normalization)."""
        return EvalPreset(size=self.size, mean=self.mean, std=self.std)

    def matrices(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """(B, 2, 3) affine matrices in normalized coordinates, one per image."""

        def uniform(bound: float) -> torch.Tensor:
            return (torch.rand(batch, generator=generator) * 2.0 - 1.0) * bound

        angle = uniform(math.radians(self.rotation_deg))
        shear = uniform(math.radians(self.shear_deg))
        scale = 1.0 + uniform(self.zoom)
        tx, ty = uniform(2.0 * self.shift), uniform(2.0 * self.shift)  # [-1, 1] spans 2
        fx = (
            torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0)
            if self.hflip
            else torch.ones(batch)
        )
        fy = (
            torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0)
            if self.vflip
            else torch.ones(batch)
        )
        cos, sin = torch.cos(angle), torch.sin(angle)
        zeros, ones = torch.zeros(batch), torch.ones(batch)
        rotate = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        shear_m = torch.stack(
            [torch.stack([ones, torch.tan(shear)], -1), torch.stack([zeros, ones], -1)], -2
        )
        flip = torch.diag_embed(torch.stack([fx, fy], -1))
        # sampling matrix (output → input): flips · rotation · shear · 1/zoom
        linear = flip @ rotate @ shear_m / scale.view(-1, 1, 1)
        return torch.cat([linear, torch.stack([tx, ty], -1).unsqueeze(-1)], dim=-1)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # resizing is folded into the warp: the grid is built at the output size and samples
        # the stored image directly (one pass instead of resize + warp)
        x = _as_float(images, images.shape[-1])
        theta = self.matrices(x.shape[0], generator).to(x.device, x.dtype)
        grid = F.affine_grid(theta, [x.shape[0], 1, self.size, self.size], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return _normalize(x, self.mean, self.std)
