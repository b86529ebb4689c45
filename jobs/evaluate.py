"""`mura evaluate` / `python -m jobs.evaluate`: a model's metrics on any shards."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from jobs.common import job_main
from mura_core.metrics import table_rows, text_table
from pipelines.runtime.console import console
from pipelines.train.evaluate import run_evaluation

DESCRIPTION = (
    "Score SHARDS with MODEL — an MLflow URI (models:/mura-cnn@champion, models:/mura-cnn/2, "
    "runs:/<run id>/model) or a model bundle folder — and print image- and study-level "
    "accuracy, AUROC, Cohen's kappa (95% CI), sensitivity and specificity per body part, at "
    "the threshold recorded with the model unless --threshold says otherwise."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model URI or bundle folder")
    p.add_argument("shards", type=Path, help="shards folder written by `mura ingest`")
    p.add_argument(
        "--split",
        action="append",
        choices=("train", "val", "test"),
        default=None,
        help="split(s) to score (repeatable; default test)",
    )
    p.add_argument("--body-part", default=None, help="only this study type")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="operating threshold (default: the one recorded with the model)",
    )
    p.add_argument("--tracking-uri", default=None, help="override MLFLOW_TRACKING_URI")
    p.add_argument("--address", default=None, help="Ray cluster to join (default: local Ray)")


def command(args: argparse.Namespace) -> int:
    result = run_evaluation(
        args.model,
        args.shards,
        splits=tuple(args.split or ["test"]),
        body_part=args.body_part,
        threshold=args.threshold,
        tracking_uri=args.tracking_uri,
        address=args.address,
    )
    where = (
        f"{result.model.name} v{result.model.version}" if result.model.version else result.model.uri
    )
    console.print(
        f"model {where} ({result.model.info.model}, {result.model.info.size}px), "
        f"threshold {result.threshold:.3f}"
    )
    for split, evaluation in result.evaluations.items():
        for level in ("study", "image"):
            console.print(f"\n{split}, {level} level:")
            console.print(text_table(table_rows(evaluation, level)))
    return 0


def register(sub: argparse._SubParsersAction, summary: str) -> None:
    p = sub.add_parser("evaluate", help=summary, description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=command)


def main(argv: Sequence[str] | None = None) -> int:
    return job_main("evaluate", DESCRIPTION, add_arguments, command, argv)


if __name__ == "__main__":
    sys.exit(main())
