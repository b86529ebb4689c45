"""What a synthetic archive will contain, decided before any pixel is drawn.

The plan (patients, studies, labels, splits, views, which views carry which sign, image
sizes) is drawn from one seeded generator; each study then gets its own child seed, so
rendering can run in parallel and still be byte-for-byte deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..records import MURA_BODY_PARTS, BodyPart, Split
from .anatomy import SIGNS

# Study counts per body part in MURA-v1.1 train, used as sampling weights so the synthetic
# mix looks like the real one (wrist and shoulder most common, humerus and forearm rare).
_PART_WEIGHTS = {
    BodyPart.ELBOW: 1912,
    BodyPart.FINGER: 1865,
    BodyPart.FOREARM: 1010,
    BodyPart.HAND: 2185,
    BodyPart.HUMERUS: 727,
    BodyPart.SHOULDER: 3015,
    BodyPart.WRIST: 3697,
}
# Portrait-ness of films per body part: (min, max) of width/height.
_ASPECT = {
    BodyPart.ELBOW: (0.7, 1.0),
    BodyPart.FINGER: (0.55, 0.85),
    BodyPart.FOREARM: (0.45, 0.7),
    BodyPart.HAND: (0.7, 0.95),
    BodyPart.HUMERUS: (0.45, 0.7),
    BodyPart.SHOULDER: (0.85, 1.3),
    BodyPart.WRIST: (0.65, 0.95),
}


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines an archive: same config → same bytes."""

    studies: int
    format: str = "png"
    seed: int = 0
    size: int = 512
    positive_fraction: float = 0.4
    valid_fraction: float = 0.15
    body_parts: tuple[BodyPart, ...] = MURA_BODY_PARTS
    sign_strength: float = 1.0  # > 1: bolder fractures / periosteal reaction (small images)

    def __post_init__(self) -> None:
        if self.studies < 1:
            raise ConfigError(f"studies must be >= 1, got {self.studies}")
        if self.format not in ("png", "dicom"):
            raise ConfigError(f"format must be png or dicom, got {self.format!r}")
        if not 64 <= self.size <= 4096:
            raise ConfigError(f"size must be between 64 and 4096 px, got {self.size}")
        if not 0.0 <= self.positive_fraction <= 1.0 or not 0.0 <= self.valid_fraction < 1.0:
            raise ConfigError("positive_fraction must be in [0, 1] and valid_fraction in [0, 1)")
        if not 0.5 <= self.sign_strength <= 10.0:
            raise ConfigError(f"sign_strength must be in [0.5, 10], got {self.sign_strength}")
        if not self.body_parts or BodyPart.OTHER in self.body_parts:
            raise ConfigError("body_parts must name one or more of the seven MURA parts")


@dataclass(frozen=True)
class ViewPlan:
    """One image: its index in the study, pixel size, and the sign drawn in it (or None)."""

    index: int
    height: int
    width: int
    sign: str | None


@dataclass(frozen=True)
class StudyPlan:
    """One study: who, what, which split, label, and its views; `seed` renders its pixels."""

    index: int
    patient_index: int
    study_number: int
    body_part: BodyPart
    split: Split
    label: int
    sign: str | None
    views: tuple[ViewPlan, ...]
    seed: int

    @property
    def patient(self) -> str:
        return f"patient{self.patient_index:05d}"


def _views(
    rng: np.random.Generator, cfg: SynthConfig, part: BodyPart, sign: str | None
) -> tuple[ViewPlan, ...]:
    n_views = int(rng.choice([1, 2, 3, 4], p=[0.1, 0.35, 0.4, 0.15]))
    lo, hi = _ASPECT[part]
    if sign is None:
        carries = [False] * n_views
    else:
        # MURA labels studies, not images: only some views of an abnormal study show it.
        carries = list(rng.random(n_views) < 0.6)
        if not any(carries):
            carries[int(rng.integers(n_views))] = True
    views = []
    for i in range(n_views):
        aspect = float(rng.uniform(lo, hi))
        long_side = int(rng.integers(int(cfg.size * 0.7), cfg.size + 1))
        if aspect <= 1.0:
            height, width = long_side, max(64, round(long_side * aspect))
        else:
            height, width = max(64, round(long_side / aspect)), long_side
        views.append(ViewPlan(i, height, width, sign if carries[i] else None))
    return tuple(views)


def plan_archive(cfg: SynthConfig) -> tuple[StudyPlan, ...]:
    """Draw the archive's studies; patients hold 1–3 studies, all in one split."""
    rng = np.random.default_rng(cfg.seed)
    weights = np.array([_PART_WEIGHTS[p] for p in cfg.body_parts], dtype=np.float64)
    weights /= weights.sum()
    child_seeds = np.random.SeedSequence(cfg.seed).spawn(cfg.studies)
    studies: list[StudyPlan] = []
    patient_index = 0
    numbers: dict[tuple[int, BodyPart], int] = {}
    n_valid = 0
    while len(studies) < cfg.studies:
        patient_index += 1
        remaining = cfg.studies - len(studies)
        n_studies = min(remaining, int(rng.choice([1, 2, 3], p=[0.75, 0.2, 0.05])))
        want_valid = rng.random() < cfg.valid_fraction
        # keep at least one valid study in any archive of 2+ studies, so both splits exist
        last_chance = remaining == n_studies and n_valid == 0 and cfg.studies > 1
        split = (
            Split.VALID if (want_valid or last_chance) and cfg.valid_fraction > 0 else Split.TRAIN
        )
        for _ in range(n_studies):
            part = cfg.body_parts[int(rng.choice(len(cfg.body_parts), p=weights))]
            label = int(rng.random() < cfg.positive_fraction)
            sign = str(rng.choice(SIGNS)) if label else None
            number = numbers.get((patient_index, part), 0) + 1
            numbers[(patient_index, part)] = number
            index = len(studies)
            studies.append(
                StudyPlan(
                    index=index,
                    patient_index=patient_index,
                    study_number=number,
                    body_part=part,
                    split=split,
                    label=label,
                    sign=sign,
                    views=_views(rng, cfg, part, sign),
                    seed=int(child_seeds[index].generate_state(1)[0]),
                )
            )
            n_valid += split is Split.VALID
    return tuple(studies)
