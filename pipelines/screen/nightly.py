"""`mura nightly`: screen only the studies not screened before, exactly once each.

State folder: `.mura-state` (the marker: the folder is ours), `ledger.parquet` (one row per
study ever screened: pseudonymized study key, digest of its image set, the report that holds
it), `reports/<time>-<id>/` (each with the report marker `.mura-report` from its creation),
`.lock`, `logs/`, `watermark.json`, `outbox/`, `notify/` (the worklist's outbox, with
`--notify`), `feedback/` (`mura feedback`).

The recipe, top to bottom: check, writing nothing — the state folder holds nothing we did not
make (`check_state`: a file or folder not ours by name, or a folder under reports/ without
the report marker, is refused with one line naming it; a state of the previous version, with
no state marker but only our names and marked reports, is accepted and gets the marker), the
flags, MLflow and the model (`preflight`), the archive listed → claim the state (created,
marked, locked: an overlapping cron run fails at once) → repair what a killed run left
(`_recover`) → a new report folder, marked → deliver the outbox → keep the studies that are
new or whose image set changed, write their keys to the report's `pending.parquet`, screen
them, and only after the report is complete (`summary.json` written last) rewrite the ledger
atomically.

A run killed at any point is repaired by the next one: an incomplete report of ours is
deleted (its studies were never recorded, so they are screened again), but the image scores
it had written (`.scores`, see `parts`) go into the next report, which scores only the images
without one; a complete report missing from the ledger is recorded without screening again.
Nothing without our marker is ever deleted.

From a PACS, a run queries StudyDate from `watermark.json` (when the last successful run
started) minus an overlap (default 2 days: images that arrive late), compares each study's
instance set (never counting our own results, which the listing skips) with the ledger,
and, with `--write-back`, records a study only once the PACS acknowledged its results;
refused objects wait in `STATE/outbox`, delivered first by the next run. With `--notify`,
the worklist is told each screened study's finding; what it does not take waits in
`STATE/notify` and is delivered by the next run, even one with nothing new to screen.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mura_core.archive import PacsSource, open_archive, parse_source
from mura_core.notify.summary import NotifySummary
from mura_core.outputs import (
    LOCK_FILE,
    atomic,
    check_writable,
    is_empty,
    locked,
    mark_folder,
    reason,
    remove_temporaries,
    write_marker,
    writing,
)
from mura_core.schema import arrow_schema
from mura_core.screen_summary import read_summary
from mura_core.shards import write_json_atomic
from pipelines.results.writeback import Delivered
from pipelines.runtime.console import console
from pipelines.screen.config import ScreenConfig, ScreenError
from pipelines.screen.folder import MARKER, MARKER_TEXT, SUMMARY
from pipelines.screen.inputs import ScreenInput, open_listed
from pipelines.screen.parts import FOLDER as SCORES
from pipelines.screen.prepare import Prepared, deliver, preflight
from pipelines.screen.result import ScreenResult
from pipelines.screen.run import execute

LEDGER = "ledger.parquet"
PENDING = "pending.parquet"
REPORTS = "reports"
WATERMARK = "watermark.json"
OUTBOX = "outbox"
NOTIFY_OUTBOX = "notify"
INTERRUPTED = ".scores-interrupted"  # an interrupted report's image scores, for the next
STATE_MARKER = ".mura-state"
STATE_TEXT = "mura nightly state\n"
# what a state folder of ours may hold: our names, our temporaries (`outputs.atomic`, and
# the probe files and ledger temporary of earlier versions), `mura feedback`'s folder
OURS = {
    LEDGER,
    REPORTS,
    LOCK_FILE,
    WATERMARK,
    OUTBOX,
    NOTIFY_OUTBOX,
    INTERRUPTED,
    STATE_MARKER,
    "logs",
    "feedback",
}
OUR_TEMPORARY = re.compile(
    r"^(\.(ledger\.parquet|watermark\.json)\.tmp(-.*)?|\.write-probe-[0-9a-f]+)$"
)
LEGACY_REPORT = {PENDING, SCORES}  # an interrupted report of the previous version: unmarked
DEFAULT_OVERLAP_DAYS = 2.0


@dataclass(frozen=True)
class LedgerRow:
    """A study screened: a row of `ledger.parquet` (and of a report's `pending.parquet`)."""

    study_key: str  # the study's key, as its report holds it
    image_set: str  # digest of the study's image set (a changed set is screened again)
    report: str  # the report folder's name (under reports/) that holds it
    screened_at: str  # ISO 8601, seconds


LEDGER_SCHEMA = arrow_schema(LedgerRow)


@dataclass(frozen=True)
class NightlyResult:
    state: Path
    new: int
    unchanged: int
    recovered: int
    ledger: int
    report: ScreenResult | None
    told: NotifySummary | None = None  # nothing new: the worklist's outbox delivered


def read_ledger(state: Path) -> pa.Table:
    path = state / LEDGER
    return pq.read_table(path) if path.is_file() else LEDGER_SCHEMA.empty_table()


def _write_ledger(state: Path, table: pa.Table) -> None:
    with atomic(state / LEDGER) as tmp:
        pq.write_table(table.cast(LEDGER_SCHEMA), tmp)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())


def _record(state: Path, report: Path) -> int:
    """Put a complete report's studies into the ledger (one row per study, latest wins),
    except those whose write-back was not acknowledged: they are screened again."""
    pending = pq.read_table(report / PENDING)
    summary = read_summary(report)
    later = set(summary.incomplete_studies)  # images not retrieved: screened again
    if summary.write_back is not None:  # not stored: in the outbox, recorded on delivery
        later.update(f.study_key for f in summary.write_back.failed)
    if later:
        keep = pc.invert(pc.is_in(pending["study_key"], pa.array(sorted(later), pa.string())))
        pending = pending.filter(keep)
    ledger = read_ledger(state)
    keys = set(pending["study_key"].to_pylist())
    kept = [r for r in ledger.to_pylist() if r["study_key"] not in keys]
    _write_ledger(state, pa.Table.from_pylist(kept + pending.to_pylist(), schema=LEDGER_SCHEMA))
    return pending.num_rows


def _record_delivered(state: Path, delivered: Delivered | None) -> int:
    """Studies whose results waited in the outbox and are now stored: into the ledger, with
    the report they were screened in (they are not screened again)."""
    if delivered is None or not delivered.studies:
        return 0
    rows = []
    for report, keys in _by_report(delivered.studies).items():
        path = state / REPORTS / report / PENDING
        if path.is_file():
            rows += [r for r in pq.read_table(path).to_pylist() if r["study_key"] in keys]
    ledger = read_ledger(state)
    keys = {r["study_key"] for r in rows}
    kept = [r for r in ledger.to_pylist() if r["study_key"] not in keys]
    _write_ledger(state, pa.Table.from_pylist(kept + rows, schema=LEDGER_SCHEMA))
    return len(rows)


def _by_report(studies: dict[str, str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for key, report in studies.items():
        out.setdefault(report, set()).add(key)
    return out


def _report_is_ours(report: Path, legacy: bool = False) -> bool:
    """A folder under reports/ that is ours: it carries the report marker, or holds nothing
    (a run killed as it made it); in a state of the previous version also an interrupted
    report holding only our names (that version marked a report once screening began)."""
    if report.is_symlink() or not report.is_dir():
        return False
    if (report / MARKER).is_file() or is_empty(report):
        return True
    return legacy and {entry.name for entry in report.iterdir()} <= LEGACY_REPORT


def not_ours(state: Path) -> list[str]:
    """What in `state` the project did not make, by name relative to it (none: a new or
    empty folder, or a state of ours)."""
    if not state.is_dir():
        return []
    legacy = not (state / STATE_MARKER).is_file()
    found = [
        entry.name
        for entry in sorted(state.iterdir())
        if entry.name not in OURS and not OUR_TEMPORARY.match(entry.name)
    ]
    reports = state / REPORTS
    if reports.is_symlink() or (reports.exists() and not reports.is_dir()):
        found.append(REPORTS)
    elif reports.is_dir():
        found += [
            f"{REPORTS}/{report.name}"
            for report in sorted(reports.iterdir())
            if not _report_is_ours(report, legacy)
        ]
    return found


def check_state(state: Path) -> Path:
    """STATE, resolved and checked without writing anything: new, empty, or ours only;
    anything else is refused with one line naming it (and nothing is deleted)."""
    state = state.expanduser().resolve()
    if state.exists() and not state.is_dir():
        raise ScreenError(f"state {state} exists and is not a folder")
    found = not_ours(state)
    if found:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise ScreenError(
            f"state folder {state} holds what mura nightly did not make: {shown} (nothing "
            "was changed): choose a new or empty folder, or move those out of it"
        )
    check_writable(state, ScreenError)
    return state


@contextmanager
def _claimed_state(state: Path) -> Iterator[None]:
    """STATE created and locked for the block, with its marker; a state of the previous
    version gets it too, after its interrupted reports got theirs. Our temporaries go when
    the block fails."""
    try:
        state.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ScreenError(f"cannot write to state folder {state}: {reason(exc)}") from exc
    with locked(state, "mura nightly run", ScreenError):
        if not (state / STATE_MARKER).is_file():
            for report in sorted((state / REPORTS).glob("*")):
                if _report_is_ours(report, legacy=True) and not (report / MARKER).is_file():
                    write_marker(report / MARKER, MARKER_TEXT, ScreenError)
            write_marker(state / STATE_MARKER, STATE_TEXT, ScreenError)
        with writing(state / REPORTS, ScreenError):
            (state / REPORTS).mkdir(exist_ok=True)
        try:
            yield
        except BaseException:
            remove_temporaries(state)
            raise


def _recover(state: Path) -> int:
    """Repair after a killed run; returns studies recorded from complete reports. The image
    scores of the newest incomplete report are kept in STATE for the next report. Only
    reports of ours are touched (`check_state` refused a state holding others)."""
    recovered = 0
    recorded = set(read_ledger(state)["report"].to_pylist())
    for report in sorted((state / REPORTS).glob("*")):
        if report.name in recorded or not _report_is_ours(report):
            continue
        if (report / SUMMARY).is_file() and (report / PENDING).is_file():
            recovered += _record(state, report)
            continue
        if (report / SCORES).is_dir():  # reports sort by start time: the newest wins
            shutil.rmtree(state / INTERRUPTED, ignore_errors=True)
            (report / SCORES).rename(state / INTERRUPTED)
        shutil.rmtree(report)
    return recovered


def _carry_scores(state: Path, report: Path) -> None:
    """An interrupted report's image scores into the new report: only images without a
    (still valid) score are scored."""
    if (state / INTERRUPTED).is_dir():
        (state / INTERRUPTED).rename(report / SCORES)


def read_watermark(state: Path) -> dt.datetime | None:
    """When the last successful run started (PACS sources query from there)."""
    path = state / WATERMARK
    if not path.is_file():
        return None
    return dt.datetime.fromisoformat(json.loads(path.read_text())["watermark"])


def _write_watermark(state: Path, when: dt.datetime) -> None:
    write_json_atomic(state / WATERMARK, {"watermark": when.isoformat(timespec="seconds")})


def pacs_window(cfg: ScreenConfig, state: Path, overlap_days: float) -> ScreenConfig:
    """The PACS query from the last run's watermark minus the overlap (late images)."""
    mark = read_watermark(state)
    if mark is None:
        return cfg
    since = (mark - dt.timedelta(days=overlap_days)).date()
    query = cfg.pacs.query
    if query.since is not None and query.since > since:
        since = query.since
    return replace(cfg, pacs=replace(cfg.pacs, query=replace(query, since=since)))


def _open(cfg: ScreenConfig, state: Path, overlap_days: float) -> tuple[ScreenConfig, ScreenInput]:
    """The archive, listed: a folder, or a PACS queried from the watermark on."""
    if isinstance(parse_source(cfg.source), PacsSource):
        cfg = pacs_window(cfg, state, overlap_days)
    archive = open_archive(
        cfg.source, kind=cfg.kind, labels=cfg.labels, access=cfg.access, pacs=cfg.pacs
    )
    return cfg, open_listed(archive, pseudonymize=cfg.pseudonymize)


def _write_pending(report: Path, digests: dict[str, str], new: set[str], now: dt.datetime) -> None:
    """The studies this report screens, as the ledger rows they become once it completes."""
    rows = [
        {
            "study_key": k,
            "image_set": digests[k],
            "report": report.name,
            "screened_at": now.isoformat(timespec="seconds"),
        }
        for k in sorted(new)
    ]
    with atomic(report / PENDING) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=LEDGER_SCHEMA), tmp)


def run_nightly(
    cfg: ScreenConfig, state: Path, *, overlap_days: float = DEFAULT_OVERLAP_DAYS
) -> NightlyResult:
    """Screen the new or changed studies of `cfg.source`; `cfg.out` is ignored (a new report
    folder under `state/reports` is used). A PACS is queried from the last successful
    run's watermark minus `overlap_days`; the watermark moves only when a run completes.
    Every check runs before anything is written; see the module docstring."""
    state = check_state(state)
    now = dt.datetime.now(dt.UTC)
    name = f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    screen_cfg = replace(cfg, out=state / REPORTS / name, job="nightly")
    if screen_cfg.write_back is not None and screen_cfg.outbox is None:
        screen_cfg = replace(screen_cfg, outbox=state / OUTBOX)
    if screen_cfg.notify is not None and screen_cfg.notify.outbox is None:
        notify = replace(screen_cfg.notify, outbox=state / NOTIFY_OUTBOX)
        screen_cfg = replace(screen_cfg, notify=notify)
    prepared = preflight(screen_cfg)
    screen_cfg, inp = _open(screen_cfg, state, overlap_days)
    with _claimed_state(state):
        with writing(state / "logs", ScreenError):
            console.keep_log(state, "nightly")
        return _screen_new(screen_cfg, prepared, inp, state, now)


def _screen_new(
    cfg: ScreenConfig, prepared: Prepared, inp: ScreenInput, state: Path, now: dt.datetime
) -> NightlyResult:
    """In the claimed state: repair, a new marked report, the outbox, then screen what the
    ledger does not hold (or holds with another image set)."""
    recovered = _recover(state)
    out = mark_folder(prepared.out, MARKER, MARKER_TEXT, ScreenError)
    _carry_scores(state, out)
    prepared = deliver(prepared)
    recovered += _record_delivered(state, prepared.delivered)
    ledger = read_ledger(state)
    known = dict(zip(ledger["study_key"].to_pylist(), ledger["image_set"].to_pylist(), strict=True))
    digests = inp.study_digests or {}
    new = {k for k, d in digests.items() if known.get(k) != d}
    if not new:
        shutil.rmtree(out)
        _write_watermark(state, now)
        told = prepared.notifier.notify([]) if prepared.notifier is not None else None
        return NightlyResult(state, 0, len(digests), recovered, ledger.num_rows, None, told)
    _write_pending(out, digests, new, now)
    result = execute(cfg, prepared, inp.only_studies(new))
    _record(state, out)
    _write_watermark(state, now)
    return NightlyResult(
        state, len(new), len(digests) - len(new), recovered, read_ledger(state).num_rows, result
    )


def format_nightly(result: NightlyResult) -> str:
    lines = [
        f"state: {result.state}  ledger: {result.ledger} studies",
        f"new or changed studies: {result.new}, already screened: {result.unchanged}"
        + (f", recovered from an interrupted run: {result.recovered}" if result.recovered else ""),
    ]
    if result.report is None:
        lines.append("nothing new to screen")
    if result.told is not None and (result.told.resent or result.told.pending):
        lines.append(
            f"worklist {result.told.destination}: {result.told.resent} notices delivered from "
            f"the outbox, {result.told.pending} still waiting"
        )
    return "\n".join(lines)
