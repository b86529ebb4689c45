"""A population of studies as monitoring sees it: study scores, flag rate, body-part mix and
input statistics; the validation split's is the model's reference (`reference.json`)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mura_core.monitoring.inputs import Inputs, quantiles, sample

REFERENCE_FILE = "reference.json"


@dataclass(frozen=True)
class Snapshot:
    """One population of studies: a validation split (the reference) or a screening night."""

    scores: tuple[float, ...]  # study probabilities (a sample)
    threshold: float
    flag_rate: float | None
    studies: int
    body_parts: dict[str, int]  # studies per body part
    inputs: Inputs | None = None
    sensitivity: float | None = None  # study level, at the threshold(s): the reference only
    sensitivity_low: float | None = None  # its bootstrap 95 % CI's lower bound

    @classmethod
    def from_studies(
        cls,
        prob: Sequence[float],
        body_part: Sequence[str],
        flagged: Sequence[bool],
        threshold: float,
        inputs: Inputs | None = None,
    ) -> Snapshot:
        """From studies already decided (`flagged`: by the model's operating point,
        `mura_core.decisions`); `threshold` is the model's overall one, as reported."""
        p = np.asarray(prob, dtype=np.float64)
        flags = np.asarray(flagged, dtype=bool)
        if len(flags) != len(p):
            raise ValueError(f"{len(p)} study probabilities but {len(flags)} flags")
        return cls(
            scores=sample(p),
            threshold=float(threshold),
            flag_rate=float(np.mean(flags)) if len(p) else None,
            studies=len(p),
            body_parts=dict(sorted(Counter(str(b) for b in body_part).items())),
            inputs=inputs,
        )

    def score_quantiles(self) -> dict[str, float]:
        return quantiles(self.scores)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Snapshot:
        inputs = data.get("inputs")
        return cls(
            scores=tuple(data["scores"]),
            threshold=float(data["threshold"]),
            flag_rate=data.get("flag_rate"),
            studies=int(data["studies"]),
            body_parts=dict(data["body_parts"]),
            sensitivity=data.get("sensitivity"),
            sensitivity_low=data.get("sensitivity_low"),
            inputs=None
            if inputs is None
            else Inputs(
                **{
                    **inputs,
                    "pixel_mean": tuple(inputs["pixel_mean"]),
                    "pixel_std": tuple(inputs["pixel_std"]),
                }
            ),
        )


def save_reference(folder: Path, reference: Snapshot) -> Path:
    """`reference.json` beside a bundle's `model.json`."""
    path = Path(folder) / REFERENCE_FILE
    path.write_text(json.dumps({"version": 1, "reference": reference.to_json()}))
    return path


def load_reference(folder: Path) -> Snapshot | None:
    """A bundle's reference, or None for a model saved before references existed."""
    path = Path(folder) / REFERENCE_FILE
    if not path.is_file():
        return None
    return Snapshot.from_json(json.loads(path.read_text())["reference"])
