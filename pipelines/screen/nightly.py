"""`mura nightly`: screen only the studies not screened before, exactly once each.

State folder: `ledger.parquet` (one row per study ever screened: pseudonymized study key,
digest of its image set, the report that holds it) and `reports/<time>-<id>/`. A run lists
the archive, keeps the studies that are new or whose image set changed, writes their keys to
the new report's `pending.parquet`, screens them, and only after the report is complete
(`summary.json` written last) rewrites the ledger atomically. A run killed at any point is
repaired by the next one: an incomplete report is deleted (its studies were never recorded,
so they are screened again), but the image scores it had written (`.scores`, see
`parts`) go into the next report, which scores only the images without one; a complete
report missing from the ledger is recorded without screening again. A lock keeps two runs
(an overlapping cron) apart.

From a PACS, a run queries StudyDate from `watermark.json` (when the last successful run
started) minus an overlap (default 2 days: images that arrive late), compares each study's
instance set (never counting our own results, which the listing skips) with the ledger,
and, with `--write-back`, records a study only once the PACS acknowledged its results;
refused objects wait in `STATE/outbox`, delivered first by the next run.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mura_core.pacs.address import is_pacs_address
from mura_core.screen_report import read_summary
from mura_core.shards import make_writable_dir, write_json_atomic

from ..console import console
from .inputs import ScreenInput, open_pacs, open_raw
from .parts import FOLDER as SCORES
from .run import SUMMARY, ScreenConfig, ScreenError, ScreenResult, execute, preflight
from .writeback import Delivered

LEDGER = "ledger.parquet"
PENDING = "pending.parquet"
REPORTS = "reports"
LOCK = ".lock"
WATERMARK = "watermark.json"
OUTBOX = "outbox"
INTERRUPTED = ".scores-interrupted"  # an interrupted report's image scores, for the next
DEFAULT_OVERLAP_DAYS = 2.0
LEDGER_SCHEMA = pa.schema(
    [
        ("study_key", pa.string()),
        ("image_set", pa.string()),
        ("report", pa.string()),
        ("screened_at", pa.string()),
    ]
)


@dataclass(frozen=True)
class NightlyResult:
    state: Path
    new: int
    unchanged: int
    recovered: int
    ledger: int
    report: ScreenResult | None


@contextmanager
def _locked(state: Path) -> Iterator[None]:
    handle = (state / LOCK).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        handle.close()
        raise ScreenError(f"another nightly run is using {state} (lock {state / LOCK})") from exc
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def read_ledger(state: Path) -> pa.Table:
    path = state / LEDGER
    return pq.read_table(path) if path.is_file() else LEDGER_SCHEMA.empty_table()


def _write_ledger(state: Path, table: pa.Table) -> None:
    tmp = state / f".{LEDGER}.tmp"
    pq.write_table(table.cast(LEDGER_SCHEMA), tmp)
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    tmp.replace(state / LEDGER)


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


def _recover(state: Path) -> int:
    """Repair after a killed run; returns studies recorded from complete reports. The image
    scores of the newest incomplete report are kept in STATE for the next report."""
    recovered = 0
    recorded = set(read_ledger(state)["report"].to_pylist())
    for report in sorted((state / REPORTS).glob("*")):
        if not report.is_dir() or report.name in recorded:
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
    """The archive (a folder) or the PACS window, listed; write-back's outbox in STATE."""
    if not is_pacs_address(cfg.source):
        inp = open_raw(
            Path(cfg.source), kind=cfg.kind, labels=cfg.labels, pseudonymize=cfg.pseudonymize
        )
        return cfg, inp
    cfg = pacs_window(cfg, state, overlap_days)
    inp = open_pacs(str(cfg.source), cfg.pacs, labels=cfg.labels, pseudonymize=cfg.pseudonymize)
    return cfg, inp


def _check_state(state: Path) -> Path:
    state = state.expanduser().resolve()
    try:
        make_writable_dir(state / REPORTS)
    except OSError as exc:
        raise ScreenError(f"cannot write to state folder {state}: {exc.strerror or exc}") from exc
    return state


def run_nightly(
    cfg: ScreenConfig, state: Path, *, overlap_days: float = DEFAULT_OVERLAP_DAYS
) -> NightlyResult:
    """Screen the new or changed studies of `cfg.source`; `cfg.out` is ignored (a new report
    folder under `state/reports` is used). A PACS is queried from the last successful
    run's watermark minus `overlap_days`; the watermark moves only when a run completes."""
    state = _check_state(state)
    console.keep_log(state, "nightly")
    with _locked(state):
        recovered = _recover(state)
        now = dt.datetime.now(dt.UTC)
        name = f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
        screen_cfg = replace(cfg, out=state / REPORTS / name, job="nightly")
        if screen_cfg.write_back is not None and screen_cfg.outbox is None:
            screen_cfg = replace(screen_cfg, outbox=state / OUTBOX)
        prepared = preflight(screen_cfg)
        _carry_scores(state, prepared.out)
        recovered += _record_delivered(state, prepared.delivered)
        screen_cfg, inp = _open(screen_cfg, state, overlap_days)
        known = dict(
            zip(
                (ledger := read_ledger(state))["study_key"].to_pylist(),
                ledger["image_set"].to_pylist(),
                strict=True,
            )
        )
        digests = inp.study_digests or {}
        new = {k for k, d in digests.items() if known.get(k) != d}
        if not new:
            shutil.rmtree(prepared.out)
            _write_watermark(state, now)
            return NightlyResult(state, 0, len(digests), recovered, ledger.num_rows, None)
        pending = pa.Table.from_pylist(
            [
                {
                    "study_key": k,
                    "image_set": digests[k],
                    "report": name,
                    "screened_at": now.isoformat(timespec="seconds"),
                }
                for k in sorted(new)
            ],
            schema=LEDGER_SCHEMA,
        )
        pq.write_table(pending, prepared.out / PENDING)
        result = execute(screen_cfg, prepared, inp.only_studies(new))
        _record(state, prepared.out)
        _write_watermark(state, now)
        return NightlyResult(
            state,
            len(new),
            len(digests) - len(new),
            recovered,
            read_ledger(state).num_rows,
            result,
        )


def format_nightly(result: NightlyResult) -> str:
    lines = [
        f"state: {result.state}  ledger: {result.ledger} studies",
        f"new or changed studies: {result.new}, already screened: {result.unchanged}"
        + (f", recovered from an interrupted run: {result.recovered}" if result.recovered else ""),
    ]
    if result.report is None:
        lines.append("nothing new to screen")
    return "\n".join(lines)
