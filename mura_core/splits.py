"""Train / val / test assignment by patient, seeded and independent of listing order.

A patient's images must never sit on both sides of a split (the model would be graded on
people it has seen). Each patient gets a keyed hash of (seed, patient); patients sorted by it
are cut at the requested fractions, so the assignment is the same however the archive was
listed, and adding a patient does not reshuffle the others.

MURA publishes train/valid: valid (used as test by both papers) stays test, and val is
carved out of train by patient (the seed paper: 9089 / 663 images for wrist, about 7 %).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ConfigError
from .records import ImageRef, Split

TRAIN, VAL, TEST = "train", "val", "test"
FINAL_SPLITS: tuple[str, ...] = (TRAIN, VAL, TEST)


@dataclass(frozen=True)
class SplitConfig:
    """Fractions are of patients. `test_fraction` only applies to sources without splits."""

    seed: int = 0
    val_fraction: float = 0.07
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0 or not 0.0 <= self.test_fraction < 1.0:
            raise ConfigError("val and test fractions must be in [0, 1)")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError("val_fraction + test_fraction must leave patients for training")


def _rank(seed: int, patient: str) -> bytes:
    return hashlib.sha256(f"{seed}\x00{patient}".encode()).digest()


def _cut(
    patients: set[str], seed: int, fractions: Sequence[tuple[str, float]], rest: str
) -> dict[str, str]:
    """Sort patients by their seeded hash; give the first slices to `fractions`, then `rest`."""
    ordered = sorted(patients, key=lambda p: _rank(seed, p))
    out: dict[str, str] = {}
    start = 0
    for name, fraction in fractions:
        count = round(fraction * len(ordered))
        if fraction > 0 and count == 0 and len(ordered) - start > 1:
            count = 1  # a requested split is never silently empty on a small archive
        for patient in ordered[start : start + count]:
            out[patient] = name
        start += count
    for patient in ordered[start:]:
        out[patient] = rest
    return out


def assign_splits(refs: Sequence[ImageRef], cfg: SplitConfig) -> list[str]:
    """The final split of each reference (same order): 'train', 'val' or 'test'.

    Source split TRAIN → train or val (by patient); VALID or TEST → test; no source split →
    test / val / train by patient at the configured fractions.
    """
    published_train = {r.patient_key for r in refs if r.split is Split.TRAIN}
    unsplit = {r.patient_key for r in refs if r.split is None}
    from_train = _cut(published_train, cfg.seed, [(VAL, cfg.val_fraction)], TRAIN)
    from_none = _cut(unsplit, cfg.seed, [(TEST, cfg.test_fraction), (VAL, cfg.val_fraction)], TRAIN)
    out = []
    for ref in refs:
        if ref.split is Split.TRAIN:
            out.append(from_train[ref.patient_key])
        elif ref.split in (Split.VALID, Split.TEST):
            out.append(TEST)
        else:
            out.append(from_none[ref.patient_key])
    return out
