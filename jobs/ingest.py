"""`mura ingest` / `python -m jobs.ingest`: parse flags, call pipelines.ingest, print."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from jobs.common import access_policy, add_source_arguments, job_main, pacs_options
from mura_core.archive.pseudonyms import PSEUDONYMIZE_CHOICES
from mura_core.splits import SplitConfig, read_split_file
from pipelines.ingest import (
    IngestConfig,
    format_result,
    run_ingest,
)
from pipelines.runtime.console import console

DESCRIPTION = (
    "List SOURCE (a MURA-v1.1 archive, a DICOM tree or an image folder), decode every image "
    "with Ray Data tasks and write Parquet shards of one row per image (pixels resized to "
    "SIZE x SIZE) to OUT/images/, with OUT/quarantine.parquet (every input that could not "
    "be used, and why) and OUT/manifest.json (written last). Re-running into the same OUT "
    "replaces the previous set; it never duplicates."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source_arguments(p)
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="shards folder (created; locked while a run writes it: a second run into it "
        "fails at once)",
    )
    p.add_argument("--size", type=int, default=320, help="pixel size of the square (default 320)")
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (e.g. auto, ray://head:10001); default: local Ray",
    )
    p.add_argument(
        "--rows-per-shard",
        type=int,
        default=1024,
        help="most rows in one Parquet file (default 1024)",
    )
    p.add_argument("--batch-size", type=int, default=16, help="images per decode task batch")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the patient split, stratified by label and body part (default 0)",
    )
    p.add_argument(
        "--split-file",
        type=Path,
        default=None,
        metavar="CSV",
        help="the split to use instead: a CSV path,split (train, val or test) naming every "
        "image, as ingest writes beside its shards (split.csv)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.07,
        help="patients of the training split held out for validation (default 0.07)",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="patients held out for test, for sources without splits (default 0.2)",
    )
    p.add_argument(
        "--pseudonymize",
        choices=PSEUDONYMIZE_CHOICES,
        default="auto",
        help="replace identifiers with keyed pseudonyms (auto: DICOM sources only)",
    )
    p.add_argument(
        "--force", action="store_true", help="replace shards of a different source already in OUT"
    )


def command(args: argparse.Namespace) -> int:
    split_file = None
    if args.split_file is not None:
        split_file = str(args.split_file.expanduser().resolve())
        read_split_file(split_file)  # a bad file fails before the archive is listed
    cfg = IngestConfig(
        source=args.source,
        out=args.out,
        size=args.size,
        kind=args.kind,
        labels=args.labels,
        address=args.address,
        rows_per_shard=args.rows_per_shard,
        batch_size=args.batch_size,
        splits=SplitConfig(
            seed=args.seed,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
            split_file=split_file,
        ),
        pseudonymize=args.pseudonymize,
        force=args.force,
        pacs=pacs_options(args),
        access=access_policy(args),
    )
    console.print(format_result(run_ingest(cfg)))
    return 0


def register(sub: argparse._SubParsersAction, summary: str) -> None:
    p = sub.add_parser("ingest", help=summary, description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=command)


def main(argv: Sequence[str] | None = None) -> int:
    return job_main("ingest", DESCRIPTION, add_arguments, command, argv)


if __name__ == "__main__":
    sys.exit(main())
