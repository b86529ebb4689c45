"""`mura monitor` / `python -m jobs.monitor`: the screening runs as a time series; exit 3 on
an alert, for cron."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from jobs.common import register_command, tool_main, wrapped_help
from mura_core.monitoring.drift import Bands
from pipelines.monitor.feedback import DEFAULT_EXPERIMENT as FEEDBACK_EXPERIMENT
from pipelines.monitor.trends import (
    DEFAULT_EXPERIMENT,
    EXIT_ALERT,
    MonitorError,
    exit_status,
    format_realized,
    format_table,
    load_points,
    load_realized,
    parse_since,
    plot,
    write_html,
)
from pipelines.registry.tracking import check_tracking, resolve_tracking_uri, sqlite_path

DESCRIPTION = (
    "Print one line per finished run of the screening experiment (mura screen and mura "
    "nightly runs), oldest first: date, studies, flag rate, the drift of its scores and input "
    "intensities (PSI, KS) and of its body-part mix (Cramér's V) against the reference saved "
    "with its model, and its alert. Runs whose model carries no reference are compared with "
    "the nights before them (flag rate against their median). --plot draws the trends, "
    "--html writes a page with the plot and the table. Exit status: 0 when the latest run is "
    f"in band, {EXIT_ALERT} when it alerts, 1 on an error."
)
EPILOG = """\
examples:
  mura monitor
  mura monitor --since 2026-12-01 --plot monitor.png --html monitor.html
  # cron, after the night's run: mail the table when the latest run alerts (3) or fails (1)
  30 6 * * *  mura monitor --html /srv/mura/monitor.html > /srv/mura/monitor.txt 2>&1 ||
              mail -s "MURA monitor: exit $?" ai-lead@example.org < /srv/mura/monitor.txt
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--experiment",
        default=DEFAULT_EXPERIMENT,
        help=f"MLflow experiment of the screening runs (default {DEFAULT_EXPERIMENT})",
    )
    p.add_argument(
        "--since",
        default=None,
        metavar="DATE",
        help="only runs started on or after DATE (2026-12-01, UTC; default: every run)",
    )
    p.add_argument("--plot", type=Path, default=None, metavar="PNG", help="write the trends")
    p.add_argument(
        "--html", type=Path, default=None, metavar="HTML", help="write a page: plot and table"
    )
    p.add_argument(
        "--band",
        action="append",
        default=None,
        metavar="NAME=VALUE",
        help="bands drawn on the plot and used for runs without a reference (as for mura "
        "screen: psi, ks, mix_v, flag_rate, alpha, min_studies)",
    )
    p.add_argument(
        "--feedback-experiment",
        default=FEEDBACK_EXPERIMENT,
        help="MLflow experiment of `mura feedback`'s realized figures, shown beside the runs "
        f"(default {FEEDBACK_EXPERIMENT})",
    )
    p.add_argument("--tracking-uri", default=None, help="override MLFLOW_TRACKING_URI")


def command(args: argparse.Namespace) -> int:
    uri = resolve_tracking_uri(args.tracking_uri)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise MonitorError(
            f"no MLflow store at {db}: screen first, or point --tracking-uri / "
            "MLFLOW_TRACKING_URI at the store"
        )
    bands = Bands.parse(args.band or [])
    client = check_tracking(uri)
    points = load_points(client, args.experiment, parse_since(args.since), bands)
    realized = load_realized(client, args.feedback_experiment)
    print(format_table(points))
    if realized:
        print(format_realized(realized))
    if args.plot is not None:
        print(f"plot: {plot(points, bands, args.plot)}")
    if args.html is not None:
        print(f"page: {write_html(points, bands, args.html)}")
    latest = points[-1]
    verdict = f"ALERT: {latest.alert}" if latest.alert else "in band"
    print(f"latest run {latest.run_id[:8]}: {verdict}")
    if realized and realized[-1].alert:
        print(f"latest reads {realized[-1].name}: ALERT: {realized[-1].alert}")
    return exit_status(points, realized)


def register(sub: argparse._SubParsersAction, summary: str) -> None:
    register_command(
        sub, "monitor", summary, wrapped_help(DESCRIPTION, EPILOG), add_arguments, command
    )


def main(argv: Sequence[str] | None = None) -> int:
    return tool_main("monitor", wrapped_help(DESCRIPTION, EPILOG), add_arguments, command, argv)


if __name__ == "__main__":
    sys.exit(main())
