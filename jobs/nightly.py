"""`mura nightly` / `python -m jobs.nightly`: screen what is new in an archive since last run."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines.screen import format_nightly, format_result, run_nightly

from .common import add_source_arguments, run_command
from .screen import EXTRA_ERRORS, add_model_arguments, config

HELP = "screen only the studies of ARCHIVE not screened before (cron-safe, re-runnable)"
DESCRIPTION = (
    "Screen the studies of ARCHIVE that are not yet in STATE's ledger, or whose image set "
    "changed, into a new report under STATE/reports/, and record them in STATE/ledger.parquet "
    "once the report is complete. Safe to run from cron every night and to re-run after a "
    "crash: an interrupted report is discarded and its studies screened again; a complete one "
    "is recorded without screening again; no study is screened twice or lost. Same model "
    "flags as `mura screen`."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source_arguments(p, help="raw archive folder", metavar="archive")
    p.add_argument(
        "--state",
        type=Path,
        required=True,
        help="state folder: ledger.parquet and reports/ (created)",
    )
    add_model_arguments(p)


def command(args: argparse.Namespace) -> int:
    result = run_nightly(config(args, args.state), args.state)
    if result.report is not None:
        print(format_result(result.report))
    print(format_nightly(result))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("nightly", help=HELP, description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=command, extra_errors=EXTRA_ERRORS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.nightly", description=DESCRIPTION)
    add_arguments(parser)
    return run_command(command, parser.parse_args(argv), EXTRA_ERRORS)


if __name__ == "__main__":
    sys.exit(main())
