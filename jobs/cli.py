"""The `mura` command: one sub-command per job, each a thin call into the library.

Only the chosen command's module is imported (`COMMANDS`): a job module brings torch, Ray
Train or MLflow (seconds and most of a GB), which `mura --help`, `mura synth`, `mura inspect`
or a mistyped flag never need; the other commands get a stub parser with their one line.

Errors a user can fix (missing folder, bad flag value, unreadable CSV) print one line
`mura: error: …` and exit 1; argparse usage errors exit 2; a bug prints its traceback and a
hint to report it, and exits 70.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from jobs.common import (
    access_policy,
    add_source_arguments,
    add_verbose,
    pacs_options,
    progress,
    run_command,
)
from mura_core import __version__
from mura_core.archive import format_summary, list_archive
from mura_core.body_parts import MURA_BODY_PARTS, BodyPart
from mura_core.errors import ConfigError
from mura_core.synth import SynthConfig, synthesize


@dataclass(frozen=True)
class Command:
    """A `mura` sub-command: the module whose `register(sub)` builds its parser, and the
    line `mura --help` shows for it."""

    module: str
    summary: str


COMMANDS: dict[str, Command] = {
    "ingest": Command("jobs.ingest", "turn an archive into Parquet shards with Ray Data"),
    "train": Command(
        "jobs.train", "train a classifier on shards with Ray Train, log and register it in MLflow"
    ),
    "pretrain": Command(
        "jobs.pretrain",
        "pretrain an encoder on unlabeled images (self-supervised, VICReg), register it",
    ),
    "evaluate": Command(
        "jobs.evaluate", "evaluate a registered / logged model on shards (study-level metrics)"
    ),
    "compare": Command(
        "jobs.compare", "compare training runs side by side; promote one to champion"
    ),
    "screen": Command(
        "jobs.screen", "score a whole archive (raw or shards) into a study-level report"
    ),
    "nightly": Command(
        "jobs.nightly",
        "screen only the studies of ARCHIVE not screened before (cron-safe, re-runnable)",
    ),
    "monitor": Command(
        "jobs.monitor",
        "the screening runs over time: flag rates, drift, alerts (exit 3 on an alert)",
    ),
    "feedback": Command(
        "jobs.feedback",
        "radiologists' reads of screened studies: realized sensitivity, PPV, … per week",
    ),
    "results": Command(
        "jobs.results", "a study's mura-screen results in a PACS, newest first (SR versions)"
    ),
    "submit": Command(
        "jobs.submit", "run a job (ingest, train, evaluate, screen, nightly) on a Ray cluster"
    ),
    "demo": Command(
        "jobs.demo", "run the system end to end on a synthetic archive (the embedded default)"
    ),
    "viewer": Command(
        "jobs.viewer",
        "see a PACS's studies and our SR and Secondary Captures in OHIF Viewer v3 (127.0.0.1)",
    ),
    "mlflow-server": Command(
        "jobs.mlflow_server",
        "run an MLflow tracking server for a cluster (SQLite + artifacts in one store folder)",
    ),
}


def _body_parts(text: str | None) -> tuple[BodyPart, ...]:
    """`XR_WRIST,XR_HAND` → body parts; a name that is not a MURA study type is refused."""
    if not text:
        return MURA_BODY_PARTS
    names = [name.strip() for name in text.split(",") if name.strip()]
    known = {str(part): part for part in MURA_BODY_PARTS}
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ConfigError(
            f"--body-parts {text!r}: use one or more of {', '.join(known)} (comma-separated)"
        )
    return tuple(known[name] for name in names)


def _synth_config(args: argparse.Namespace) -> SynthConfig:
    common = dict(format=args.format, seed=args.seed, size=args.size)
    if args.like_mura is not None:
        if args.studies is not None or args.body_parts is not None:
            raise ConfigError(
                "--like-mura sets the studies and body parts: drop --studies/--body-parts"
            )
        return SynthConfig.like_mura(args.like_mura, sign_strength=args.sign_strength, **common)
    if args.studies is None:
        raise ConfigError("give --studies N, or --like-mura [SCALE] for MURA's size and mix")
    return SynthConfig(
        studies=args.studies,
        positive_fraction=args.positive_fraction,
        sign_strength=args.sign_strength,
        body_parts=_body_parts(args.body_parts),
        **common,
    )


def cmd_synth(args: argparse.Namespace) -> int:
    cfg = _synth_config(args)
    archive = synthesize(args.out, cfg, workers=args.workers, progress=progress("studies"))
    print(
        f"wrote {len(archive.studies)} studies, {archive.n_images} images ({cfg.format}) "
        f"to {archive.root} in {archive.seconds:.1f}s"
    )
    print(format_summary(list_archive(archive.root)))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    listing = list_archive(
        args.source,
        kind=args.kind,
        labels=args.labels,
        access=access_policy(args),
        pacs=pacs_options(args),
    )
    print(format_summary(listing))
    return 0


def _chosen(argv: Sequence[str]) -> str | None:
    """The command named on the line (its first word that is not an option), if any."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser: every command's, or (given the line) the chosen one's in full and a stub
    with its one line for each of the others."""
    chosen = None if argv is None else _chosen(argv)
    parser = argparse.ArgumentParser(
        prog="mura",
        description="Batch screening of musculoskeletal radiographs (MURA) on Ray: synthesize, "
        "inspect, ingest, train, evaluate, and screen whole archives (once or nightly).",
    )
    parser.add_argument("--version", action="version", version=f"mura {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "synth",
        help="write a synthetic archive with known labels",
        description="Write a synthetic MURA-like archive: MURA-v1.1 layout with "
        "its four CSVs (png), or a DICOM tree with labels.csv (dicom). Seeded "
        "and deterministic; OUT must be new or empty.",
    )
    p.add_argument("out", type=Path, help="output folder (created; must be new or empty)")
    p.add_argument("--studies", type=int, default=None, help="number of studies")
    p.add_argument(
        "--like-mura",
        type=float,
        nargs="?",
        const=1.0,
        default=None,
        metavar="SCALE",
        help="MURA-v1.1's size and mix instead of --studies: its normal and abnormal studies "
        "and its images per body part and split (train/valid), times SCALE (default 1: "
        "14,656 studies, 40,005 images; 0.0625 = 1/16)",
    )
    p.add_argument(
        "--format",
        choices=("png", "dicom"),
        default="png",
        help="png: MURA-v1.1 layout + CSVs; dicom: DICOM tree + labels.csv",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--size",
        type=int,
        default=512,
        help="longest image side in px, like MURA's 512 (default 512)",
    )
    p.add_argument(
        "--positive-fraction",
        type=float,
        default=0.4,
        help="fraction of abnormal studies (default 0.4, about MURA's; --like-mura has MURA's own)",
    )
    p.add_argument(
        "--body-parts",
        default=None,
        help="comma-separated study types to draw, e.g. XR_WRIST,XR_HAND (default: all seven)",
    )
    p.add_argument(
        "--sign-strength",
        type=float,
        default=1.0,
        help="1: realistic signs; 2-4: bolder fractures and periosteal reaction that "
        "survive downsizing to small training sizes (default 1)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes rendering in parallel (default: all cores)",
    )
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser(
        "inspect",
        help="list an archive and print what it holds",
        description="Detect an archive's kind, list its images (headers only "
        "for DICOM) and print studies, positives and images per body part, "
        "with any files that cannot be used and why.",
    )
    add_source_arguments(p)
    p.set_defaults(func=cmd_inspect)

    for name, command in COMMANDS.items():
        if argv is None or name == chosen:
            importlib.import_module(command.module).register(sub, command.summary)
        else:
            sub.add_parser(name, help=command.summary, add_help=False)

    add_verbose(parser)
    for command in sub.choices.values():
        add_verbose(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    line = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(line).parse_args(line)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
