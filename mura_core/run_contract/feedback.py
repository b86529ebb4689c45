"""5. Feedback periods (`mura feedback`): realized figures from radiologists' reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mura_core.run_contract.tags import Job, Tag

if TYPE_CHECKING:  # annotations only: monitor and the Ray Train controller import this
    from mura_core.monitoring.feedback import Estimate


REALIZED = "realized"
_CI = ("", "_ci_low", "_ci_high")


@dataclass(frozen=True)
class FeedbackPeriod:
    """One period's realized figures from radiologists' reads, overall and per body part
    (those with enough studies of each class), and its alert."""

    name: str
    studies: int
    figures: Mapping[str, Estimate]
    by_part: Mapping[str, Mapping[str, Estimate]] = field(default_factory=dict)
    alert: str | None = None

    def to_tags(self) -> dict[str, str]:
        """Set when the run opens; `mura.alert` is set (or removed) apart: see `alert`."""
        return {Tag.JOB: Job.FEEDBACK, Tag.PERIOD: self.name}

    def to_metrics(self) -> dict[str, float]:
        out = {f"{REALIZED}.studies": float(self.studies)}
        groups = [("", self.figures), *((f".{p}", f) for p, f in self.by_part.items())]
        for suffix, figures in groups:
            for name, estimate in figures.items():
                values = (estimate.value, estimate.low, estimate.high)
                for ci, value in zip(_CI, values, strict=True):
                    if value is not None:
                        out[f"{REALIZED}.{name}{ci}{suffix}"] = value
        return out

    @classmethod
    def from_run(cls, metrics: Mapping[str, float], tags: Mapping[str, str]) -> FeedbackPeriod:
        """A logged period back (a run without `mura.period` is no period: KeyError)."""
        found: dict[str | None, dict[str, dict[str, float]]] = {}
        for key, value in metrics.items():
            stem, dot, part = key.removeprefix(f"{REALIZED}.").partition(".")
            if not key.startswith(f"{REALIZED}.") or stem == "studies":
                continue
            name, ci = _split_ci(stem)
            found.setdefault(part if dot else None, {}).setdefault(name, {})[ci] = value
        estimates = {
            part: {name: _estimate(values) for name, values in sorted(figures.items())}
            for part, figures in found.items()
        }
        return cls(
            name=tags[Tag.PERIOD],
            studies=int(metrics.get(f"{REALIZED}.studies", 0)),
            figures=estimates.pop(None, {}),
            by_part=dict(sorted(estimates.items())),  # type: ignore[arg-type]
            alert=tags.get(Tag.ALERT),
        )


def _split_ci(stem: str) -> tuple[str, str]:
    for ci in _CI[1:]:
        if stem.endswith(ci):
            return stem.removesuffix(ci), ci
    return stem, ""


def _estimate(values: Mapping[str, float]) -> Estimate:
    from mura_core.monitoring.feedback import (
        Estimate,  # scipy and sklearn: only when a period is read
    )

    return Estimate(values.get(""), values.get("_ci_low"), values.get("_ci_high"))
