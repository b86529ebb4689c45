"""`mura feedback` / `python -m jobs.feedback`: radiologists' reads against the nightly flags."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from jobs.common import register_command, tool_main, wrapped_help
from pipelines.monitor.feedback import DEFAULT_EXPERIMENT, PERIODS, FeedbackResult, run_feedback
from pipelines.monitor.trends import REALIZED, realized_cell
from pipelines.registry.tracking import check_tracking, resolve_tracking_uri

DESCRIPTION = (
    "Match a labels CSV (header: study_instance_uid (or study) and/or accession_number, label, "
    "read_date) to the studies a nightly state screened (on this machine, through the keyed "
    "pseudonyms and the reports' re-identification maps; nothing identifying is logged), and "
    "log per period of the read date (ISO week by default) the "
    "realized sensitivity, specificity, PPV, NPV, study AUROC and Cohen's kappa with bootstrap "
    "95% CIs, per body part where each class has at least 5 studies, to MLflow (experiment "
    f"{DEFAULT_EXPERIMENT}, one run per period; feeding a period again replaces it). A period "
    "whose sensitivity falls below the lower CI bound of the model's validation sensitivity "
    "alerts (tag mura.alert; `mura monitor` shows it and exits 3). Reads matching no screened "
    "study are counted and written to STATE/feedback/unmatched.csv (owner-only)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("labels", type=Path, metavar="LABELS.csv", help="the radiologists' reads")
    p.add_argument("--state", type=Path, required=True, help="the nightly state folder")
    p.add_argument(
        "--period", choices=PERIODS, default="week", help="how reads are grouped (default week)"
    )
    p.add_argument(
        "--experiment",
        default=DEFAULT_EXPERIMENT,
        help=f"MLflow experiment (default {DEFAULT_EXPERIMENT})",
    )
    p.add_argument("--tracking-uri", default=None, help="override MLFLOW_TRACKING_URI")


def format_result(result: FeedbackResult) -> str:
    lines = [f"{result.matched} reads matched screened studies, {result.unmatched} did not"]
    if result.unmatched_file is not None:
        lines.append(f"unmatched reads (not logged): {result.unmatched_file}")
    for problem in result.problems:
        lines.append(f"line {problem.line}: not used: {problem.reason}")
    lines.append(f"{'period':<10} {'studies':>7}  " + "  ".join(f"{n:<17}" for n in REALIZED))
    for period in result.periods:
        cells = [realized_cell(period, name).ljust(17) for name in REALIZED]
        lines.append(f"{period.name:<10} {period.studies:>7}  " + "  ".join(cells))
        if period.alert:
            lines.append(f"ALERT {period.name}: {period.alert}")
    return "\n".join(lines)


def command(args: argparse.Namespace) -> int:
    uri = resolve_tracking_uri(args.tracking_uri)
    check_tracking(uri)
    result = run_feedback(
        args.labels, args.state, period=args.period, tracking_uri=uri, experiment=args.experiment
    )
    print(format_result(result))
    return 0


def register(sub: argparse._SubParsersAction, summary: str) -> None:
    register_command(sub, "feedback", summary, wrapped_help(DESCRIPTION), add_arguments, command)


def main(argv: Sequence[str] | None = None) -> int:
    return tool_main("feedback", wrapped_help(DESCRIPTION), add_arguments, command, argv)


if __name__ == "__main__":
    sys.exit(main())
