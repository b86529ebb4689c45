"""What a synthetic archive will contain, decided before any pixel is drawn.

The plan (patients, studies, labels, splits, views, which views carry which sign, image
sizes) is drawn from one seeded generator; each study then gets its own child seed, so
rendering can run in parallel and still be byte-for-byte deterministic.

Two mixes: sampled (`studies` drawn by MURA's body-part weights, `positive_fraction`,
`valid_fraction`, 1–4 views), or like MURA (`SynthConfig.like_mura(scale)`): per body part
and split exactly MURA-v1.1's published numbers of normal and abnormal studies and of
images, times `scale` (1 = 14,656 studies, 40,005 images), at MURA's 512 px.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mura_core.body_parts import MURA_BODY_PARTS, BodyPart
from mura_core.errors import ConfigError
from mura_core.listing import Split
from mura_core.synth.anatomy import SIGNS

# MURA-v1.1 as published (the dataset's README and paper, Table 1): per body part and split,
# (normal studies, abnormal studies, images). 13,457 + 1,199 = 14,656 studies; 36,808 +
# 3,197 = 40,005 images.
MURA_V11: dict[BodyPart, dict[Split, tuple[int, int, int]]] = {
    BodyPart.ELBOW: {Split.TRAIN: (1094, 660, 4931), Split.VALID: (92, 66, 465)},
    BodyPart.FINGER: {Split.TRAIN: (1280, 655, 5106), Split.VALID: (92, 83, 461)},
    BodyPart.FOREARM: {Split.TRAIN: (590, 287, 1825), Split.VALID: (69, 64, 301)},
    BodyPart.HAND: {Split.TRAIN: (1497, 521, 5543), Split.VALID: (101, 66, 460)},
    BodyPart.HUMERUS: {Split.TRAIN: (321, 271, 1272), Split.VALID: (68, 67, 288)},
    BodyPart.SHOULDER: {Split.TRAIN: (1364, 1457, 8379), Split.VALID: (99, 95, 563)},
    BodyPart.WRIST: {Split.TRAIN: (2134, 1326, 9752), Split.VALID: (140, 97, 659)},
}
# Sampling weights of the sampled mix (wrist and shoulder most common, humerus and forearm
# rare): MURA's study counts, except finger's 1,865 where MURA-v1.1 has 2,110. Kept as they
# were so every seeded archive made so far stays byte for byte the same; `like_mura` uses
# the table above.
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
    mura_scale: float | None = None  # like MURA at this scale (see `like_mura`); None: sampled

    @classmethod
    def like_mura(cls, scale: float = 1.0, **kw: object) -> SynthConfig:
        """MURA-v1.1's studies and images per body part, split and label, times `scale`."""
        if not 0.0 < scale <= 16.0:
            raise ConfigError(f"the MURA scale must be in (0, 16], got {scale}")
        studies = sum(n + a for n, a, _ in mura_cells(scale).values())
        return cls(studies=studies, mura_scale=scale, **kw)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if self.mura_scale is not None and self.body_parts != MURA_BODY_PARTS:
            raise ConfigError("an archive like MURA has all seven body parts")
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


def mura_cells(scale: float) -> dict[tuple[BodyPart, Split], tuple[int, int, int]]:
    """(normal studies, abnormal studies, images) per (body part, split) at `scale`: each
    rounded, at least one study and one image per study in every cell."""
    cells = {}
    for part, splits in MURA_V11.items():
        for split, (normal, abnormal, images) in splits.items():
            n, a = round(normal * scale), round(abnormal * scale)
            if n + a == 0:
                n, a = (1, 0) if normal >= abnormal else (0, 1)
            cells[(part, split)] = (n, a, max(n + a, round(images * scale)))
    return cells


def _views(
    rng: np.random.Generator,
    cfg: SynthConfig,
    part: BodyPart,
    sign: str | None,
    n_views: int | None = None,
) -> tuple[ViewPlan, ...]:
    if n_views is None:
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


class _Planner:
    """Makes the studies of one plan, in order: each draws its sign and views from the plan's
    generator and gets its own child seed; study numbers count per patient and body part."""

    def __init__(self, cfg: SynthConfig, rng: np.random.Generator) -> None:
        self.cfg, self.rng = cfg, rng
        self.seeds = np.random.SeedSequence(cfg.seed).spawn(cfg.studies)
        self.numbers: dict[tuple[int, BodyPart], int] = {}
        self.made = 0

    def study(
        self, patient: int, part: BodyPart, split: Split, label: int, n_views: int | None = None
    ) -> StudyPlan:
        sign = str(self.rng.choice(SIGNS)) if label else None
        number = self.numbers[(patient, part)] = self.numbers.get((patient, part), 0) + 1
        index, self.made = self.made, self.made + 1
        return StudyPlan(
            index=index,
            patient_index=patient,
            study_number=number,
            body_part=part,
            split=split,
            label=label,
            sign=sign,
            views=_views(self.rng, self.cfg, part, sign, n_views),
            seed=int(self.seeds[index].generate_state(1)[0]),
        )


def plan_archive(cfg: SynthConfig) -> tuple[StudyPlan, ...]:
    """Draw the archive's studies; patients hold 1–3 studies, all in one split."""
    if cfg.mura_scale is not None:
        return _plan_like_mura(cfg, cfg.mura_scale)
    rng = np.random.default_rng(cfg.seed)
    weights = np.array([_PART_WEIGHTS[p] for p in cfg.body_parts], dtype=np.float64)
    weights /= weights.sum()
    plan = _Planner(cfg, rng)
    studies: list[StudyPlan] = []
    patient_index = 0
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
            studies.append(plan.study(patient_index, part, split, label))
            n_valid += split is Split.VALID
    return tuple(studies)


def _mura_specs(
    rng: np.random.Generator, scale: float
) -> dict[Split, list[tuple[BodyPart, int, int]]]:
    """Per split, the studies as (body part, label, views), shuffled: every cell's images
    spread over its studies as evenly as whole views allow (MURA averages 2.7 a study)."""
    specs: dict[Split, list[tuple[BodyPart, int, int]]] = {Split.TRAIN: [], Split.VALID: []}
    for (part, split), (normal, abnormal, images) in mura_cells(scale).items():
        labels = [0] * normal + [1] * abnormal
        base, extra = divmod(images, len(labels))
        views = [base + (i < extra) for i in range(len(labels))]
        rng.shuffle(views)
        specs[split].extend((part, label, v) for label, v in zip(labels, views, strict=True))
    for split_specs in specs.values():
        rng.shuffle(split_specs)
    return specs


def _plan_like_mura(cfg: SynthConfig, scale: float) -> tuple[StudyPlan, ...]:
    """MURA's mix exactly (`mura_cells`); patients hold 1–3 studies of one split."""
    rng = np.random.default_rng(cfg.seed)
    plan = _Planner(cfg, rng)
    studies: list[StudyPlan] = []
    patient_index = 0
    for split, specs in _mura_specs(rng, scale).items():
        left = 0
        for part, label, n_views in specs:
            if left == 0:
                patient_index += 1  # MURA: 14,656 studies of 12,173 patients, 1.2 each
                left = int(rng.choice([1, 2, 3], p=[0.83, 0.14, 0.03]))
            left -= 1
            studies.append(plan.study(patient_index, part, split, label, n_views))
    return tuple(studies)
