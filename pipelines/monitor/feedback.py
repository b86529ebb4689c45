"""`mura feedback LABELS.csv --state STATE`: radiologists' reads against the nightly flags.

1. The reads (`mura_core.monitoring.feedback.read_labels`): rows that cannot be used are counted and
   said with their line numbers.
2. The screened studies: every study in the nightly ledger, with its score, flag, body part
   and the model version from the report that holds it (`studies.parquet`).
3. Matching, on this machine only: a read's StudyInstanceUID (or the study's original
   identifier) is turned into the study's keyed pseudonym with the site secret, as
   screening did, and looked up in the ledger; a read's accession number is looked up in
   the re-identification maps of the ledger's reports (`reidentify.csv`, owner-only: the
   AccessionNumber each DICOM or PACS study's headers gave). Reads that match no screened
   study (or whose accession number names several) are counted and written, identifiers,
   reasons and all, to `STATE/feedback/unmatched.csv` (owner-only, never logged); the
   console gives their count and that path.
4. Per period of the read date (ISO week by default) and per body part with at least
   MIN_PER_CLASS abnormal and normal studies: `realized` figures with bootstrap CIs, logged
   to MLflow (experiment `mura-monitor`), one run per period, replaced when the same
   period is fed again (tag `mura.period`). A period whose realized sensitivity is below
   the lower CI bound of the model's validation sensitivity (from its reference) gets the
   tag `mura.alert`. Nothing identifying is logged: counts and figures only. A period is a
   `mura_core.run_contract.FeedbackPeriod`, which names its tags and metrics.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pyarrow.parquet as pq
from mlflow.tracking import MlflowClient

from mura_core.monitoring.feedback import (
    Estimate,
    FeedbackError,
    LabelProblem,
    ReadLabel,
    period_of,
    read_labels,
    realized,
)
from mura_core.monitoring.snapshot import load_reference
from mura_core.privacy import ACCESSION, Pseudonymizer, read_reidentify
from mura_core.run_contract import FeedbackPeriod, Tag
from mura_core.shards import REIDENTIFY_FILE
from pipelines.registry.model_store import ModelSpecError, resolve_model
from pipelines.registry.tracking import ensure_experiment, use_tracking
from pipelines.screen.nightly import LEDGER, REPORTS, read_ledger

DEFAULT_EXPERIMENT = "mura-monitor"
MIN_PER_CLASS = 5  # abnormal and normal studies a body part needs for its own figures
UNMATCHED = "unmatched.csv"
PERIODS = ("week", "day", "month")


@dataclass(frozen=True)
class Screened:
    """The screened studies of a state folder, by pseudonymized study key."""

    prob: dict[str, float]
    flagged: dict[str, bool]
    body_part: dict[str, str]
    model: dict[str, str]  # `name/version` of the model that scored it
    accessions: dict[str, set[str]]  # AccessionNumber → the screened study keys it names

    def __contains__(self, key: str) -> bool:
        return key in self.prob

    def key_of(self, read: ReadLabel, pseudonymizer: Pseudonymizer) -> tuple[str | None, str]:
        """The key of the screened study a read names, or None and the reason."""
        if read.by == ACCESSION:
            keys = sorted(self.accessions.get(read.identifier, ()))
            if len(keys) == 1:
                return keys[0], ""
            if keys:
                return None, f"the accession number names {len(keys)} screened studies"
            return None, "no screened study has this accession number"
        key = pseudonymizer.study(read.identifier)
        return (key, "") if key in self else (None, "no screened study has this identifier")


@dataclass(frozen=True)
class FeedbackResult:
    periods: list[FeedbackPeriod]
    matched: int
    unmatched: int
    problems: list[LabelProblem]
    unmatched_file: Path | None


def load_screened(state: Path) -> Screened:
    """Every study of the ledger with its report's score and flag."""
    if not (state / LEDGER).is_file():
        raise FeedbackError(f"no nightly ledger in {state}: point --state at a nightly state")
    ledger = read_ledger(state)
    prob, flagged, part, model = {}, {}, {}, {}
    for report in sorted(set(ledger["report"].to_pylist())):
        path = state / REPORTS / report / "studies.parquet"
        if not path.is_file():
            continue
        table = pq.read_table(
            path,
            columns=["study_key", "mean_prob", "flagged", "body_part", "model", "model_version"],
        )
        for row in table.to_pylist():
            key = row["study_key"]
            prob[key], flagged[key], part[key] = row["mean_prob"], row["flagged"], row["body_part"]
            model[key] = f"{row['model']}/{row['model_version']}"
    keys = set(ledger["study_key"].to_pylist())
    return Screened(
        *({k: v for k, v in d.items() if k in keys} for d in (prob, flagged, part, model)),
        accessions=_accessions(state, ledger["report"].to_pylist(), keys),
    )


def _accessions(state: Path, reports: list[str], keys: set[str]) -> dict[str, set[str]]:
    """AccessionNumber → screened study keys, from the reports' re-identification maps."""
    out: dict[str, set[str]] = defaultdict(set)
    for report in sorted(set(reports)):
        path = state / REPORTS / report / REIDENTIFY_FILE
        if path.is_file():
            for kind, study, accession in read_reidentify(path):
                if kind == ACCESSION and study in keys:
                    out[accession].add(study)
    return dict(out)


def match(
    reads: list[ReadLabel], screened: Screened, pseudonymizer: Pseudonymizer
) -> tuple[list[tuple[str, ReadLabel]], list[tuple[ReadLabel, str]]]:
    """(study key, read) for the reads of screened studies (the latest read of a study
    wins); the reads that match none, each with its reason."""
    matched: dict[str, ReadLabel] = {}
    unmatched = []
    for read in reads:
        key, reason = screened.key_of(read, pseudonymizer)
        if key is None:
            unmatched.append((read, reason))
        elif key not in matched or matched[key].read_date <= read.read_date:
            matched[key] = read
    return sorted(matched.items(), key=lambda kv: kv[1].read_date), unmatched


def periods(
    matched: list[tuple[str, ReadLabel]], screened: Screened, period: str, floor: float | None
) -> list[FeedbackPeriod]:
    """Realized figures per period (and body part where both classes have MIN_PER_CLASS)."""
    groups: dict[str, list[str]] = defaultdict(list)
    labels = {key: read.label for key, read in matched}
    for key, read in matched:
        groups[period_of(read.read_date, period)].append(key)
    out = []
    for name in sorted(groups):
        keys = groups[name]
        figures = _figures(keys, labels, screened)
        by_part = {}
        for part in sorted({screened.body_part[k] for k in keys}):
            part_keys = [k for k in keys if screened.body_part[k] == part]
            y = [labels[k] for k in part_keys]
            if min(sum(y), len(y) - sum(y)) >= MIN_PER_CLASS:
                by_part[part] = _figures(part_keys, labels, screened)
        sensitivity = figures["sensitivity"].value
        alert = None
        if floor is not None and sensitivity is not None and sensitivity < floor:
            alert = (
                f"realized sensitivity {sensitivity:.2f} is below the validation "
                f"sensitivity's lower 95% bound {floor:.2f}"
            )
        out.append(FeedbackPeriod(name, len(keys), figures, by_part, alert))
    return out


def _figures(keys: list[str], labels: dict[str, int], screened: Screened) -> dict[str, Estimate]:
    return realized(
        [labels[k] for k in keys],
        [screened.prob[k] for k in keys],
        [screened.flagged[k] for k in keys],
    )


def sensitivity_floor(screened: Screened, keys: list[str]) -> float | None:
    """The lower CI bound of the validation sensitivity of the model that scored most of
    these studies (from its reference), or None when it has none."""
    if not keys:
        return None
    models = [screened.model[k] for k in keys]
    name, _, version = max(set(models), key=models.count).partition("/")
    try:
        reference = load_reference(resolve_model(f"models:/{name}/{version}").folder)
    except ModelSpecError:
        return None
    return None if reference is None else reference.sensitivity_low


def write_unmatched(state: Path, reads: list[tuple[ReadLabel, str]]) -> Path | None:
    """The unmatched reads and why, identifiers included, owner-only in STATE/feedback."""
    if not reads:
        return None
    folder = state / "feedback"
    folder.mkdir(exist_ok=True)
    path = folder / UNMATCHED
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["identifier", "kind", "label", "read_date", "reason"])
        writer.writerows(
            (r.identifier, r.by, r.label, r.read_date.isoformat(), why) for r, why in reads
        )
    return path


def log_periods(client: MlflowClient, experiment: str, found: list[FeedbackPeriod]) -> None:
    """One run per period (the same period again replaces its run's figures)."""
    experiment_id = ensure_experiment(client, experiment)
    for period in found:
        runs = client.search_runs(
            [experiment_id], f"tags.`{Tag.PERIOD}` = '{period.name}'", max_results=1
        )
        with mlflow.start_run(
            run_id=runs[0].info.run_id if runs else None,
            experiment_id=experiment_id,
            tags=period.to_tags(),
        ):
            mlflow.log_metrics(period.to_metrics())
            if period.alert:
                mlflow.set_tag(Tag.ALERT, period.alert)
            elif runs and Tag.ALERT in runs[0].data.tags:  # in band now
                client.delete_tag(runs[0].info.run_id, Tag.ALERT)


def run_feedback(
    labels: Path, state: Path, *, period: str, tracking_uri: str, experiment: str
) -> FeedbackResult:
    """Read, match, compute per period, log; see the module docstring."""
    if period not in PERIODS:
        raise FeedbackError(f"--period {period!r}: one of {', '.join(PERIODS)}")
    reads, problems = read_labels(labels)
    screened = load_screened(state)
    use_tracking(tracking_uri)
    matched, unmatched = match(reads, screened, Pseudonymizer.from_site())
    floor = sensitivity_floor(screened, [k for k, _ in matched])
    found = periods(matched, screened, period, floor)
    log_periods(MlflowClient(tracking_uri), experiment, found)
    path = write_unmatched(state, unmatched)
    return FeedbackResult(found, len(matched), len(unmatched), problems, path)
