"""Ground truth, when it arrives: radiologists' reads of screened studies, and how the flags
fared.

1. `read_labels(path)`: a CSV with a header: `study_instance_uid` (or `study`, the study's
   original identifier) and/or `accession_number` (or `accession`), `label` (1/0,
   abnormal/normal, positive/negative) and `read_date` (YYYY-MM-DD). A row names its study
   by the first of those it fills. A row that cannot be used is a `LabelProblem` with its
   line number and reason, never dropped silently; a file without the columns is one
   `FeedbackError`.
2. The pipeline matches each read to a screened study (through the nightly ledger and the
   keyed pseudonyms; see `pipelines/monitor/feedback.py`) and groups the matched ones by period.
3. `realized(labels, probs, flagged)`: what the flags did, per period and body part:
   sensitivity, specificity, PPV, NPV, study AUROC and Cohen's kappa, each with a bootstrap
   95 % CI (`scipy.stats.bootstrap`, percentile, resampling studies; a seeded generator);
   a figure that the sample cannot define (no positives, one class) is None.
"""

from __future__ import annotations

import csv
import datetime as dt
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from mura_core.errors import MuraError

# The columns that may name a read's study, in order of preference, and what each holds.
ID_COLUMNS: dict[str, str] = {
    "study_instance_uid": "study",
    "study": "study",
    "accession_number": "accession",
    "accession": "accession",
}
_LABELS = {"1": 1, "0": 0, "abnormal": 1, "normal": 0, "positive": 1, "negative": 0}
RESAMPLES = 1000


class FeedbackError(MuraError):
    """A labels file that cannot be read at all (missing, no header, no such columns)."""


@dataclass(frozen=True)
class ReadLabel:
    """One radiologist's read: the study's original identifier (`by`: "study" for its
    StudyInstanceUID or folder identifier, "accession" for its AccessionNumber), the label,
    the read date."""

    identifier: str
    label: int
    read_date: dt.date
    by: str = "study"


@dataclass(frozen=True)
class LabelProblem:
    """A row of the labels file that was not used, and why."""

    line: int
    reason: str


def read_labels(path: Path) -> tuple[list[ReadLabel], list[LabelProblem]]:
    """The reads of a labels CSV, and the rows that could not be used."""
    path = Path(path)
    if not path.is_file():
        raise FeedbackError(f"labels file not found: {path}")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        names = [n.strip().lower() for n in reader.fieldnames or []]
        id_columns = [c for c in ID_COLUMNS if c in names]
        missing = [c for c in ("label", "read_date") if c not in names]
        if not id_columns or missing:
            need = ["study_instance_uid or accession_number"] * (not id_columns) + missing
            raise FeedbackError(
                f"{path.name}: no column {', '.join(need)} in its header "
                f"({', '.join(names) or 'empty file'})"
            )
        reads, problems = [], []
        for line, row in enumerate(reader, start=2):
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            parsed = _parse(row, id_columns)
            if isinstance(parsed, str):
                problems.append(LabelProblem(line, parsed))
            else:
                reads.append(parsed)
    return reads, problems


def _parse(row: dict[str, str], id_columns: list[str]) -> ReadLabel | str:
    column = next((c for c in id_columns if row.get(c)), None)
    if column is None:
        return f"no {' or '.join(id_columns)}"
    label = _LABELS.get(row.get("label", "").lower())
    if label is None:
        return f"label {row.get('label')!r} is not 1/0, abnormal/normal or positive/negative"
    try:
        when = dt.date.fromisoformat(row.get("read_date", ""))
    except ValueError:
        return f"read_date {row.get('read_date')!r} is not a date (YYYY-MM-DD)"
    return ReadLabel(row[column], label, when, ID_COLUMNS[column])


def period_of(day: dt.date, period: str) -> str:
    """`2026-W49` (ISO week), `2026-12-06` (day) or `2026-12` (month)."""
    if period == "week":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "day":
        return day.isoformat()
    if period == "month":
        return f"{day:%Y-%m}"
    raise ValueError(f"unknown period {period!r}")


@dataclass(frozen=True)
class Estimate:
    """A realized figure and its bootstrap 95 % CI (None where undefined)."""

    value: float | None
    low: float | None = None
    high: float | None = None


def _ratio(num: np.ndarray, den: np.ndarray) -> float:
    total = den.sum()
    return float(num.sum() / total) if total else np.nan


_FIGURES: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], float]] = {
    "sensitivity": lambda y, p, f: _ratio((f == 1) & (y == 1), y == 1),
    "specificity": lambda y, p, f: _ratio((f == 0) & (y == 0), y == 0),
    "ppv": lambda y, p, f: _ratio((f == 1) & (y == 1), f == 1),
    "npv": lambda y, p, f: _ratio((f == 0) & (y == 0), f == 0),
    "auroc": lambda y, p, f: float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else np.nan,
    "kappa": lambda y, p, f: (
        float(cohen_kappa_score(y, f)) if len(np.unique(np.r_[y, f])) == 2 else np.nan
    ),
}


FIGURES = tuple(_FIGURES)


def realized(
    labels: Sequence[int],
    probs: Sequence[float],
    flagged: Sequence[bool],
    *,
    figures: Sequence[str] = FIGURES,
    seed: int = 0,
) -> dict[str, Estimate]:
    """Each of `figures` on these studies, with a bootstrap 95 % CI over studies."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    f = np.asarray(flagged, dtype=np.int64)
    out = {}
    for name in figures:
        figure = _FIGURES[name]
        value = figure(y, p, f) if len(y) else np.nan
        if not np.isfinite(value):
            out[name] = Estimate(None)
            continue
        out[name] = Estimate(float(value), *_ci(figure, y, p, f, seed))
    return out


def _ci(
    figure: Callable[[np.ndarray, np.ndarray, np.ndarray], float],
    y: np.ndarray,
    p: np.ndarray,
    f: np.ndarray,
    seed: int,
) -> tuple[float | None, float | None]:
    if len(y) < 2:
        return None, None
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        # a resample with no positive (say) makes a figure NaN: its CI is then None
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        found = stats.bootstrap(
            (y, p, f),
            figure,
            paired=True,
            vectorized=False,
            n_resamples=RESAMPLES,
            method="percentile",
            random_state=np.random.default_rng(seed),
        )
    low, high = found.confidence_interval
    if not (np.isfinite(low) and np.isfinite(high)):
        return None, None
    return float(low), float(high)
