"""`mura nightly` / `python -m jobs.nightly`: screen what is new in an archive since last run."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from jobs.common import add_source_arguments, job_main
from jobs.screen import add_model_arguments, config
from pipelines.runtime.console import console
from pipelines.screen.nightly import DEFAULT_OVERLAP_DAYS, format_nightly, run_nightly
from pipelines.screen.result import format_result

DESCRIPTION = (
    "Screen the studies of ARCHIVE that are not yet in STATE's ledger, or whose image set "
    "changed, into a new report under STATE/reports/, and record them in STATE/ledger.parquet "
    "once the report is complete. Safe to run from cron every night and to re-run after a "
    "crash: an interrupted report is discarded and its studies screened again; a complete one "
    "is recorded without screening again; no study is screened twice or lost. Same model "
    "flags as `mura screen`. From a PACS (dicomweb+http://…, dimse://…) it queries StudyDate "
    "from the last successful run minus --overlap days, and with --write-back records a study "
    "only once its results were stored (refused objects wait in STATE/outbox)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source_arguments(p, help="raw archive folder", metavar="archive")
    p.add_argument(
        "--overlap",
        type=float,
        default=DEFAULT_OVERLAP_DAYS,
        metavar="DAYS",
        help="PACS: query StudyDate from the last successful run minus DAYS, for images "
        f"that arrive late (default {DEFAULT_OVERLAP_DAYS:g})",
    )
    p.add_argument(
        "--state",
        type=Path,
        required=True,
        help="state folder: ledger.parquet and reports/ (created, with the marker "
        ".mura-state; one holding anything mura nightly did not make is refused, nothing "
        "in it is deleted)",
    )
    add_model_arguments(p)


def command(args: argparse.Namespace) -> int:
    result = run_nightly(config(args, args.state), args.state, overlap_days=args.overlap)
    if result.report is not None:
        console.print(format_result(result.report))
    console.print(format_nightly(result))
    return 0


def register(sub: argparse._SubParsersAction, summary: str) -> None:
    p = sub.add_parser("nightly", help=summary, description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=command)


def main(argv: Sequence[str] | None = None) -> int:
    return job_main("nightly", DESCRIPTION, add_arguments, command, argv)


if __name__ == "__main__":
    sys.exit(main())
