"""Train and eval presets, shared by training, evaluation and screening.

Input everywhere is what the shards hold: uint8 grayscale (B, S, S) or (B, 1, S, S). Output is
float (B, 3, size, size), normalized — three channels because both papers feed 3-channel
networks (DenseNet's ImageNet weights expect them); `channels=1` gives (B, 1, size, size) for
a one-channel stem (`build_model(..., in_channels=1)`). Augmentation is one batched affine warp
per call (rotation, shift, shear, zoom, random resized crop and flips folded into one matrix
per image, applied by a single `grid_sample`), then the radiograph's intensity (gamma and
contrast) per image, with randomness from a caller-supplied `torch.Generator`, never the
global seed. Every augmentation defaults to off, and one that is off draws no random numbers,
so adding a field never changes an existing preset's draws.
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
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], channels: int = 3
) -> torch.Tensor:
    """(B, 1, H, W) → normalized (B, channels, H, W); gray in, so equal channel statistics are
    computed once and broadcast (a view, no copy). One channel: the first mean and std."""
    if channels == 1 or (len(set(mean)) == 1 and len(set(std)) == 1):
        out = images if (mean[0], std[0]) == (0.0, 1.0) else (images - mean[0]) / std[0]
        return out.expand(-1, channels, -1, -1)
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - m) / s


@dataclass(frozen=True, kw_only=True)
class EvalPreset:
    """Resize to `size`, replicate to 3 channels (or keep 1: `channels=1`), normalize.
    No randomness."""

    size: int
    mean: tuple[float, float, float] = UNIT_MEAN
    std: tuple[float, float, float] = UNIT_STD
    channels: int = 3

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return _normalize(_as_float(images, self.size), self.mean, self.std, self.channels)


@dataclass(frozen=True, kw_only=True)
class TrainPreset:
    """Random affine (Keras ImageDataGenerator semantics) + flips, then as EvalPreset.

    rotation_deg: ±degrees; shift: ± fraction of width/height; shear_deg: ± degrees (Keras's
    `shear_range` is in degrees); zoom: scale drawn from [1 - zoom, 1 + zoom]; hflip / vflip:
    probability 0.5 each when True. Areas moved in from outside the film are black (air).

    Radiograph augmentation (all off by default):
    crop_scale (lo, hi): random resized crop (torchvision's RandomResizedCrop, folded into the
      same warp): a window of area drawn from [lo, hi] of the image, aspect ratio
      log-uniform in crop_ratio, placed uniformly where it fits, stretched to `size` — a
      zoom-in on part of the film, which a fracture sign survives at hi = 1.0 and lo ≳ 0.5.
    gamma: pixel^γ with log γ uniform in ±log(1 + gamma): films differ in exposure and in the
      detector's transfer curve (0 stays air-black, 1 stays bone-white).
    contrast: (pixel − image mean)·c + image mean, c from [1 − contrast, 1 + contrast],
      clipped to [0, 1]: window width differs between hospitals and devices.
    channels: 3 (replicated, the papers' networks) or 1 (a one-channel stem).
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
    crop_scale: tuple[float, float] | None = None
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    gamma: float = 0.0
    contrast: float = 0.0
    channels: int = 3

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.crop_scale is not None and not 0.0 < self.crop_scale[0] <= self.crop_scale[1]:
            raise ValueError(f"crop_scale must be 0 < lo <= hi, got {self.crop_scale}")
        if not 0.0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must be 0 < lo <= hi, got {self.crop_ratio}")
        if self.gamma < 0.0 or not 0.0 <= self.contrast < 1.0:
            raise ValueError("gamma must be >= 0 and contrast in [0, 1)")

    def eval_preset(self) -> EvalPreset:
        """The matching deterministic preset (same size, normalization and channels)."""
        return EvalPreset(size=self.size, mean=self.mean, std=self.std, channels=self.channels)

    def _crop(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """Per-image (width, height, x centre, y centre) of the crop window in normalized
        coordinates ([-1, 1] spans the image), RandomResizedCrop's scale and ratio ranges."""
        lo, hi = self.crop_scale or (1.0, 1.0)
        area = lo + torch.rand(batch, generator=generator) * (hi - lo)
        log_lo, log_hi = math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])
        ratio = torch.exp(log_lo + torch.rand(batch, generator=generator) * (log_hi - log_lo))
        width = torch.sqrt(area * ratio).clamp(max=1.0)
        height = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = (torch.rand(batch, generator=generator) * 2.0 - 1.0) * (1.0 - width)
        cy = (torch.rand(batch, generator=generator) * 2.0 - 1.0) * (1.0 - height)
        return width, height, cx, cy

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
        offset = torch.stack([tx, ty], -1).unsqueeze(-1)
        if self.crop_scale is not None:
            # then the crop window: output [-1, 1]² → the window (size w×h, centre cx, cy)
            width, height, cx, cy = self._crop(batch, generator)
            window = torch.diag_embed(torch.stack([width, height], -1))
            offset = window @ offset + torch.stack([cx, cy], -1).unsqueeze(-1)
            linear = window @ linear
        return torch.cat([linear, offset], dim=-1)

    def intensity(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random gamma, then contrast, per image, on [0, 1] floats (B, 1, H, W)."""
        batch = images.shape[0]
        if self.gamma > 0.0:
            bound = math.log1p(self.gamma)
            gamma = torch.exp((torch.rand(batch, generator=generator) * 2.0 - 1.0) * bound)
            images = images.clamp(min=0.0).pow(gamma.to(images).view(-1, 1, 1, 1))
        if self.contrast > 0.0:
            factor = 1.0 + (torch.rand(batch, generator=generator) * 2.0 - 1.0) * self.contrast
            mean = images.mean(dim=(1, 2, 3), keepdim=True)
            images = ((images - mean) * factor.to(images).view(-1, 1, 1, 1) + mean).clamp(0, 1)
        return images

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # resizing is folded into the warp: the grid is built at the output size and samples
        # the stored image directly (one pass instead of resize + warp)
        x = _as_float(images, images.shape[-1])
        theta = self.matrices(x.shape[0], generator).to(x.device, x.dtype)
        grid = F.affine_grid(theta, [x.shape[0], 1, self.size, self.size], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return _normalize(self.intensity(x, generator), self.mean, self.std, self.channels)
