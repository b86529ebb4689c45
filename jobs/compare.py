"""`mura compare` / `python -m jobs.compare`: training runs side by side; promote one."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from jobs.common import register_command, tool_main, wrapped_help
from pipelines.registry.promote import promote
from pipelines.registry.runs import (
    DEFAULT_ALIAS,
    DEFAULT_EXPERIMENT,
    DEFAULT_METRIC,
    CompareError,
    load_runs,
)
from pipelines.registry.runs_table import format_table, plot
from pipelines.registry.tracking import check_tracking, resolve_tracking_uri, sqlite_path

DESCRIPTION = (
    "Print the finished runs of an MLflow experiment (or the runs given with --runs) side by "
    "side, best first by --metric: model, recipe, body part, image-level train / val / test "
    "accuracy (the seed's Table 1), study-level test AUROC and Cohen's kappa with its 95% CI, "
    "kappa per body part, and the registered model version each run made. --plot draws the "
    "metric as a bar chart with CI error bars. --promote RUN_ID points the alias (default "
    "champion) of that run's registered model at the run's version — registering the run's "
    "logged model first if needed — which `mura screen` and `mura nightly` use by default; it "
    "prints the move and no table."
)
EPILOG = """\
examples:
  mura compare
  mura compare --metric test.study.auroc --plot runs.png
  mura compare --runs 3f2a9c1e 77b0d41a --metric test.study.kappa.XR_WRIST
  mura compare --promote 3f2a9c1e

Run ids may be shortened to any unique prefix (the table shows 8 characters). Metric names
are the runs' MLflow metrics: {train,val,test}.{image,study}.{accuracy,auroc,kappa,
sensitivity,specificity}, test.study.kappa.XR_WRIST (per body part), test.study.kappa_ci_low, …
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--experiment",
        default=DEFAULT_EXPERIMENT,
        help=f"MLflow experiment whose finished runs to compare (default {DEFAULT_EXPERIMENT}, "
        "as `mura train`)",
    )
    p.add_argument(
        "--runs",
        nargs="+",
        default=None,
        metavar="RUN_ID",
        help="compare exactly these runs, from any experiment (instead of --experiment's)",
    )
    p.add_argument(
        "--metric",
        default=DEFAULT_METRIC,
        help=f"MLflow metric to sort by, best first, and to plot (default {DEFAULT_METRIC})",
    )
    p.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="PNG",
        help="also write a bar chart of --metric per run, with 95%% CI bars where logged",
    )
    p.add_argument(
        "--promote",
        default=None,
        metavar="RUN_ID",
        help="point the alias of this run's registered model at its version (registering "
        "the run's logged model first if it never was)",
    )
    p.add_argument(
        "--alias", default=DEFAULT_ALIAS, help=f"alias --promote sets (default {DEFAULT_ALIAS})"
    )
    p.add_argument(
        "--name",
        default=None,
        help="registered model --promote uses (default: the one the run was registered as, "
        "else mura-<model>)",
    )
    p.add_argument("--tracking-uri", default=None, help="override MLFLOW_TRACKING_URI")


def command(args: argparse.Namespace) -> int:
    uri = resolve_tracking_uri(args.tracking_uri)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise CompareError(
            f"no MLflow store at {db}: train first, or point --tracking-uri / "
            "MLFLOW_TRACKING_URI at the store"
        )
    client = check_tracking(uri)  # runs and registry both in `uri` (tracking_client)
    if args.promote:
        done = promote(client, args.promote, args.alias, name=args.name)
        moved = f"; was v{done.previous}" if done.previous and done.previous != done.version else ""
        new = "; registered now" if done.registered_now else ""
        print(f"{done.alias} → {done.name} v{done.version} (run {done.run_id}{new}{moved})")
        if done.demoted:
            print(f"  {done.alias} taken from {', '.join(done.demoted)}")
        print(
            f"  screen / nightly load it by default (--model @{done.alias}, "
            f"i.e. models:/{done.name}@{done.alias})"
        )
        return 0
    rows = load_runs(client, args.experiment, args.runs, args.metric)
    where = "given runs" if args.runs else f"experiment {args.experiment}"
    print(
        f"{len(rows)} run(s) of {where}, best first by {args.metric} "
        "(accuracy: image level; AUROC, kappa: test studies)"
    )
    print(format_table(rows, args.metric))
    if args.plot is not None:
        print(f"plot: {plot(rows, args.metric, args.plot)}")
    return 0


def register(sub: argparse._SubParsersAction, summary: str) -> None:
    register_command(
        sub, "compare", summary, wrapped_help(DESCRIPTION, EPILOG), add_arguments, command
    )


def main(argv: Sequence[str] | None = None) -> int:
    return tool_main("compare", wrapped_help(DESCRIPTION, EPILOG), add_arguments, command, argv)


if __name__ == "__main__":
    sys.exit(main())
