"""Train / val / test assignment by patient, seeded, stratified, independent of listing order.

A patient's images must never sit on both sides of a split (the model would be graded on
people it has seen). Patients are grouped into strata by (label, body part) — the highest
label of their images, the first of their body parts — so that every split holds each
body part's abnormal share (FracAtlas: 17 % fractured, 10 fractured shoulders among 101).
Within a stratum each patient gets a keyed hash of (seed, patient); patients sorted by it
are cut at the requested fractions, so the assignment is the same however the archive was
listed, and adding a patient barely moves the others.

A user may give the split instead (`--split-file`, `SplitConfig.split_file`): a CSV with
`path,split` (split = train, val or test; path as in the archive, as in a `labels.csv`)
naming every listed image. Ingest writes the split it used beside the shards (`split.csv`,
same form), so a later ingest or a plain-PyTorch script can use the same test images.

MURA publishes train/valid: valid (used as test by both papers) stays test, and val is
carved out of train by patient (the seed paper: 9089 / 663 images for wrist, about 7 %).
"""

from __future__ import annotations

import csv
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mura_core.errors import ConfigError
from mura_core.listing import ImageRef, Split

TRAIN, VAL, TEST = "train", "val", "test"
FINAL_SPLITS: tuple[str, ...] = (TRAIN, VAL, TEST)


@dataclass(frozen=True)
class SplitConfig:
    """Fractions are of patients. `test_fraction` only applies to sources without splits.
    `split_file` (absolute path), when given, decides every image's split instead."""

    seed: int = 0
    val_fraction: float = 0.07
    test_fraction: float = 0.2
    split_file: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0 or not 0.0 <= self.test_fraction < 1.0:
            raise ConfigError("val and test fractions must be in [0, 1)")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError("val_fraction + test_fraction must leave patients for training")


def _rank(seed: int, patient: str) -> bytes:
    return hashlib.sha256(f"{seed}\x00{patient}".encode()).digest()


Stratum = tuple[int, str]


def _strata(refs: Iterable[ImageRef]) -> dict[str, Stratum]:
    """Each patient's stratum: (highest label of its images, -1 if none; first body part)."""
    labels: dict[str, int] = defaultdict(lambda: -1)
    parts: dict[str, str] = {}
    for ref in refs:
        label = -1 if ref.label is None else ref.label
        labels[ref.patient_key] = max(labels[ref.patient_key], label)
        parts[ref.patient_key] = min(parts.get(ref.patient_key, ref.body_part), ref.body_part)
    return {patient: (labels[patient], str(parts[patient])) for patient in parts}


def _cut(
    strata: Mapping[str, Stratum], seed: int, fractions: Sequence[tuple[str, float]], rest: str
) -> dict[str, str]:
    """Within each stratum, patients sorted by their seeded hash: the first slices go to
    `fractions` (patient i of n goes where (i + ½)/n falls), the remainder to `rest`."""
    groups: dict[Stratum, list[str]] = defaultdict(list)
    for patient, stratum in strata.items():
        groups[stratum].append(patient)
    out: dict[str, str] = {}
    for stratum in sorted(groups):
        ordered = sorted(groups[stratum], key=lambda p: _rank(seed, p))
        for i, patient in enumerate(ordered):
            position, edge, name = (i + 0.5) / len(ordered), 0.0, rest
            for wanted, fraction in fractions:
                edge += fraction
                if position < edge:
                    name = wanted
                    break
            out[patient] = name
    return _never_empty(out, strata, seed, fractions, rest)


def _never_empty(
    out: dict[str, str],
    strata: Mapping[str, Stratum],
    seed: int,
    fractions: Sequence[tuple[str, float]],
    rest: str,
) -> dict[str, str]:
    """A requested split is never silently empty on a small archive, nor without one of
    the labels (val with a single class can neither rank nor choose a threshold): for each
    label it lacks, it takes the lowest-ranked patient of `rest` with that label while
    `rest` keeps more than one of them."""
    labels = sorted({label for label, _ in strata.values()})
    for wanted, fraction in fractions:
        for label in labels:
            if fraction <= 0 or any(s == wanted and strata[p][0] == label for p, s in out.items()):
                continue
            remaining = sorted(
                (p for p, s in out.items() if s == rest and strata[p][0] == label),
                key=lambda p: _rank(seed, p),
            )
            if len(remaining) > 1:
                out[remaining[0]] = wanted
    return out


def read_split_file(path: str | Path) -> dict[str, str]:
    """A split file's `path → split`; a missing column, an unknown split or a path given
    two splits is one line naming the file and line."""
    name = Path(path).name
    out: dict[str, str] = {}
    if not Path(path).is_file():
        raise ConfigError(f"split file not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            _read_split_rows(csv.DictReader(f), name, out)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"split file {name} is not a readable CSV: {exc}") from None
    return out


def _read_split_rows(reader: csv.DictReader, name: str, out: dict[str, str]) -> None:
    if not {"path", "split"} <= set(reader.fieldnames or ()):
        raise ConfigError(f"split file {name}: needs the columns path,split")
    for line, row in enumerate(reader, start=2):
        rel = (row["path"] or "").replace("\\", "/").removeprefix("./")
        split = (row["split"] or "").strip().lower()
        if split not in FINAL_SPLITS:
            raise ConfigError(
                f"split file {name} line {line}: split {row['split']!r} is not one of "
                + ", ".join(FINAL_SPLITS)
            )
        if out.setdefault(rel, split) != split:
            raise ConfigError(f"split file {name} line {line}: {rel} is given two splits")


def _given_splits(refs: Sequence[ImageRef], split_file: str) -> list[str]:
    given = read_split_file(split_file)
    missing = [ref.relpath for ref in refs if ref.relpath not in given]
    if missing:
        raise ConfigError(
            f"split file {Path(split_file).name} names no split for {len(missing)} of "
            f"{len(refs)} listed images (first: {missing[0]})"
        )
    return [given[ref.relpath] for ref in refs]


def assign_splits(refs: Sequence[ImageRef], cfg: SplitConfig) -> list[str]:
    """The final split of each reference (same order): 'train', 'val' or 'test'.

    A split file gives each image's split as written. Otherwise: source split TRAIN →
    train or val (by patient); VALID or TEST → test; no source split → test / val / train
    by patient at the configured fractions, stratified by label and body part.
    """
    if cfg.split_file is not None:
        return _given_splits(refs, cfg.split_file)
    strata = _strata(refs)
    published_train = {r.patient_key for r in refs if r.split is Split.TRAIN}
    unsplit = {r.patient_key for r in refs if r.split is None}
    from_train = _cut(
        {p: strata[p] for p in published_train}, cfg.seed, [(VAL, cfg.val_fraction)], TRAIN
    )
    from_none = _cut(
        {p: strata[p] for p in unsplit},
        cfg.seed,
        [(TEST, cfg.test_fraction), (VAL, cfg.val_fraction)],
        TRAIN,
    )
    out = []
    for ref in refs:
        if ref.split is Split.TRAIN:
            out.append(from_train[ref.patient_key])
        elif ref.split in (Split.VALID, Split.TEST):
            out.append(TEST)
        else:
            out.append(from_none[ref.patient_key])
    return out


def split_lines(paths: Iterable[str], splits: Iterable[str]) -> str:
    """A split file's text (`path,split`, one row per image, sorted): what ingest writes
    beside the shards and `--split-file` reads."""
    rows = sorted(zip(paths, splits, strict=True))
    text = [f"{_csv_cell(path)},{split}" for path, split in rows]
    return "\n".join(["path,split", *text]) + "\n"


def _csv_cell(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\n') else value
