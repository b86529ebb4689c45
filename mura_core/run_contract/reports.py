"""1. The Ray Train report row: what a worker hands `ray.train.report` every epoch."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, ClassVar, Self

if TYPE_CHECKING:  # annotations only: monitor and the Ray Train controller import this
    pass


@dataclass(frozen=True)
class _Report:
    """An epoch's numbers as a flat dict (None: not measured on this rank or epoch)."""

    epoch: int

    def to_dict(self) -> dict[str, float]:
        """The row `ray.train.report` takes: the measured fields, by name."""
        out: dict[str, float] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = float(value) if isinstance(value, bool) else value
        return out

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> Self:
        """A reported row, or a `history.json` row; keys it does not know are left out."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in row.items() if k in known}
        values["epoch"] = int(row.get("epoch", 0))
        return cls(**values)

    def to_metrics(self) -> dict[str, float]:
        """What MLflow logs at `step=epoch`: every finite number but the epoch."""
        return {
            k: float(v)
            for k, v in self.to_dict().items()
            if k != "epoch" and isinstance(v, int | float) and math.isfinite(float(v))
        }


@dataclass(frozen=True)
class EpochReport(_Report):
    """One `mura train` epoch. Every rank reports the training figures (all-reduced); rank 0
    adds the val ones. `val_collapsed`: the val outputs have no spread (logged as 0/1)."""

    STEP_METRIC: ClassVar[str] = "train_loss"  # its logged steps are the epochs logged
    CHECKPOINT_SCORE: ClassVar[str] = "val_loss"  # Ray Train keeps the lowest's checkpoints
    lr: float | None = None
    train_loss: float | None = None
    train_accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    val_logit_std: float | None = None
    val_collapsed: bool | None = None
    val_study_auroc: float | None = None
    epoch_seconds: float | None = None

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> Self:
        report = super().from_dict(row)
        if report.val_collapsed is not None:
            report = replace(report, val_collapsed=bool(report.val_collapsed))
        return report

    @property
    def collapsed(self) -> bool:
        return bool(self.val_collapsed)


@dataclass(frozen=True)
class PretrainEpochReport(_Report):
    """One `mura pretrain` epoch: the VICReg loss and its terms, the embeddings' spread."""

    STEP_METRIC: ClassVar[str] = "loss"
    lr: float | None = None
    loss: float | None = None
    invariance: float | None = None
    variance: float | None = None
    covariance: float | None = None
    embedding_std: float | None = None
    steps: float | None = None
    epoch_seconds: float | None = None

    @property
    def collapsed(self) -> None:
        """Not judged per epoch: the console line says when the variance term nears 1."""
        return None
