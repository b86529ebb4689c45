"""Named training recipes: every hyper-parameter of the two papers, in one frozen record.

`recipe("seed-cnn")` gives the course paper's CNN set-up, `seed-densenet` its DenseNet-169,
`mura-paper` Rajpurkar et al.'s, `scratch` ours for sites without ImageNet weights. Flags
override fields with `dataclasses.replace`; the resolved recipe is what gets logged and
stored (as JSON) with every checkpoint. Both papers start DenseNet-169 from ImageNet, so
its recipes default to `weights="imagenet"`; the seed CNN and `scratch` have no pretrained
weights (`"none"`). See `mura_core.initial_weights`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mura_core.errors import ConfigError
from mura_core.transforms import IMAGENET_MEAN, IMAGENET_STD, UNIT_MEAN, UNIT_STD, TrainPreset


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """A training set-up. Fractions and degrees follow Keras ImageDataGenerator semantics."""

    name: str
    model: str
    size: int
    batch_size: int
    epochs: int
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    plateau_patience: int | None = None  # lr ÷ plateau_factor after this many stale epochs
    plateau_factor: float = 0.1
    rotation_deg: float = 0.0
    shift: float = 0.0
    shear_deg: float = 0.0
    zoom: float = 0.0
    hflip: bool = False
    vflip: bool = False
    imagenet_norm: bool = False
    weighted_loss: bool = False  # BCE weighted per body part (MURA paper)
    keep_best: int = 1  # best-val-loss checkpoints kept; > 1 means an ensemble of them
    weights: str = "none"  # initial weights: "imagenet", "none" (random init) or a FILE
    early_stop: int | None = None  # stop after this many epochs without a val-loss gain
    # from-scratch ingredients (see `scratch`; each off by default, so the papers' recipes
    # are as they were)
    in_channels: int = 3  # 1: a one-channel stem (torchvision backbones), gray fed as is
    optimizer: str = "adam"  # "adam", or "adamw" (decay on >= 2-D weights only)
    schedule: str = "plateau"  # "plateau" (plateau_patience; none: constant) or "cosine"
    warmup_epochs: float = 0.0  # with "cosine": linear warm-up from ~0, per step
    ema_decay: float | None = None  # weight EMA per step; the averaged weights are the model
    tta: bool = False  # the model averages an image and its mirror (carried by the bundle)
    crop_scale: tuple[float, float] | None = None  # random resized crop, area range
    gamma: float = 0.0  # random gamma, log-uniform within ±log(1 + gamma)
    contrast: float = 0.0  # random contrast factor in [1 - contrast, 1 + contrast]

    def __post_init__(self) -> None:
        if self.size < 32 or self.batch_size < 1 or self.epochs < 1 or self.lr <= 0:
            raise ConfigError(
                f"recipe {self.name}: size >= 32, batch_size >= 1, epochs >= 1 "
                "and lr > 0 are required"
            )
        if self.keep_best < 1:
            raise ConfigError("keep_best must be >= 1")
        if self.early_stop is not None and self.early_stop < 1:
            raise ConfigError(f"early_stop must be >= 1 epoch, got {self.early_stop}")
        if not self.weights:
            raise ConfigError("weights must be 'imagenet', 'none' or a file")
        if self.optimizer not in OPTIMIZERS or self.schedule not in SCHEDULES:
            raise ConfigError(
                f"recipe {self.name}: optimizer one of {', '.join(OPTIMIZERS)}, schedule one "
                f"of {', '.join(SCHEDULES)}"
            )
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.in_channels not in (1, 3) or self.warmup_epochs < 0:
            raise ConfigError("in_channels must be 1 or 3 and warmup_epochs >= 0")

    @property
    def mean(self) -> tuple[float, float, float]:
        return IMAGENET_MEAN if self.imagenet_norm else UNIT_MEAN

    @property
    def std(self) -> tuple[float, float, float]:
        return IMAGENET_STD if self.imagenet_norm else UNIT_STD

    def train_preset(self) -> TrainPreset:
        return TrainPreset(
            size=self.size,
            rotation_deg=self.rotation_deg,
            shift=self.shift,
            shear_deg=self.shear_deg,
            zoom=self.zoom,
            hflip=self.hflip,
            vflip=self.vflip,
            mean=self.mean,
            std=self.std,
            crop_scale=self.crop_scale,
            gamma=self.gamma,
            contrast=self.contrast,
            channels=self.in_channels,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        data = dict(data)
        data["betas"] = tuple(data.get("betas", (0.9, 0.999)))
        if data.get("crop_scale") is not None:
            data["crop_scale"] = tuple(data["crop_scale"])
        return cls(**data)

    def with_augment(self, mode: str) -> Recipe:
        """'recipe' keeps the recipe's augmentation, 'flips' keeps only its flips, 'none'
        trains on un-augmented images (short runs and small images learn faster)."""
        if mode == "recipe":
            return self
        if mode not in AUGMENT_MODES:
            raise ConfigError(f"augment must be one of {', '.join(AUGMENT_MODES)}, got {mode!r}")
        flips = mode == "flips"
        return dataclasses.replace(
            self,
            rotation_deg=0.0,
            shift=0.0,
            shear_deg=0.0,
            zoom=0.0,
            hflip=self.hflip and flips,
            vflip=self.vflip and flips,
            crop_scale=None,
            gamma=0.0,
            contrast=0.0,
        )

    def override(self, **changes: Any) -> Recipe:
        """A copy with the non-None `changes` applied (flags left unset change nothing)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


AUGMENT_MODES = ("recipe", "flips", "none")
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("plateau", "cosine")

_SEED_AUGMENT = dict(rotation_deg=30.0, shift=0.2, shear_deg=0.2, zoom=0.2, hflip=True)

RECIPES: dict[str, Recipe] = {
    "seed-cnn": Recipe(
        name="seed-cnn", model="cnn", size=224, batch_size=64, epochs=100, lr=1e-3, **_SEED_AUGMENT
    ),
    "seed-densenet": Recipe(
        name="seed-densenet",
        model="densenet169",
        size=224,
        batch_size=8,
        epochs=25,
        lr=1e-4,
        plateau_patience=5,
        weights="imagenet",
        **_SEED_AUGMENT,
    ),
    "mura-paper": Recipe(
        name="mura-paper",
        model="densenet169",
        size=320,
        batch_size=8,
        epochs=25,
        lr=1e-4,
        plateau_patience=1,
        rotation_deg=30.0,
        hflip=True,
        vflip=True,
        imagenet_norm=True,
        weighted_loss=True,
        keep_best=5,
        weights="imagenet",
    ),
    # Designed for training without ImageNet weights (air-gapped sites), each ingredient
    # measured on FracAtlas by bench/ablation.py (docs/training.md has the table): a
    # ResNet-18 with a one-channel stem, AdamW (decay on weights only) with a one-epoch
    # warm-up and a cosine decay, BCE weighted per body part (17 % fractured), radiograph
    # augmentation (random resized crop, rotation, mirror, gamma, contrast), weight EMA,
    # and flip TTA carried by the model.
    "scratch": Recipe(
        name="scratch",
        model="resnet18",
        size=224,
        batch_size=32,
        epochs=30,
        lr=1e-3,
        weight_decay=0.05,
        optimizer="adamw",
        schedule="cosine",
        warmup_epochs=1.0,
        in_channels=1,
        rotation_deg=15.0,
        hflip=True,
        crop_scale=(0.6, 1.0),
        gamma=0.3,
        contrast=0.2,
        weighted_loss=True,
        ema_decay=0.99,
        tta=True,
    ),
}


def recipe(name: str) -> Recipe:
    """A named recipe, or a one-line error listing the names."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ConfigError(f"unknown recipe {name!r}: choose {', '.join(RECIPES)}") from None
