"""One training run as the CLI builds it (`TrainConfig`), and the splits every run uses.

The recipe, top to bottom: the flags become a frozen `TrainConfig` (the recipe and its
initial weights, the workers, the tracking store, how the threshold is chosen, what is
registered); every check of it against the shards and the tracking store is
`pipelines.train.prepare`'s, before Ray or a worker starts. `SPLITS`: the splits a run
needs, trains on (train), chooses its threshold on (val) and reports (all three).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mura_core.recipes import Recipe

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class TrainConfig:
    """One training run; the CLI builds it from flags."""

    shards: Path
    recipe: Recipe  # its `weights` field: "imagenet", "none" or a FILE
    workers: int = 1
    gpu: bool = False
    body_part: str | None = None
    experiment: str = "mura-train"
    register: str | None = None
    tracking_uri: str | None = None
    storage: Path | None = None
    name: str | None = None
    max_failures: int = 2
    target_sensitivity: float | None = None
    calibrate: bool = False  # fit temperature scaling on val; the model carries it
    per_part_threshold: bool = False  # one threshold per body part for target_sensitivity
    seed: int = 0
    address: str | None = None
    cpus_per_worker: float | None = None
    cam_examples: int = 4

    @property
    def registered_name(self) -> str:
        return self.register or f"mura-{self.recipe.model}"
