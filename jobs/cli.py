"""The `mura` command: one sub-command per job, each a thin call into the library.

Errors a user can fix (missing folder, bad flag value, unreadable CSV) print one line
`mura: error: …` and exit 1; argparse usage errors exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mura_core import __version__
from mura_core.sources import KINDS, format_summary, list_source
from mura_core.synth import SynthConfig, synthesize
from pipelines.ingest import IngestConfig, format_result, run_ingest

from . import ingest, train
from .common import progress, run_command


def cmd_synth(args: argparse.Namespace) -> int:
    cfg = SynthConfig(
        studies=args.studies,
        format=args.format,
        seed=args.seed,
        size=args.size,
        positive_fraction=args.positive_fraction,
        sign_strength=args.sign_strength,
    )
    archive = synthesize(args.out, cfg, workers=args.workers, progress=progress("studies"))
    print(
        f"wrote {len(archive.studies)} studies, {archive.n_images} images ({cfg.format}) "
        f"to {archive.root} in {archive.seconds:.1f}s"
    )
    print(format_summary(list_source(archive.root)))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    print(format_summary(list_source(args.source, kind=args.kind, labels=args.labels)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    out = Path(args.out).expanduser().resolve()
    archive_dir, shards_dir = out / "archive", out / "shards"
    if archive_dir.exists():
        print(f"[demo] 1. reusing the synthetic archive at {archive_dir}")
    else:
        print(f"[demo] 1. synthesize {args.studies} studies into {archive_dir}")
        synthesize(
            archive_dir,
            SynthConfig(studies=args.studies, seed=args.seed, size=args.size),
            progress=progress("studies"),
        )
    print(format_summary(list_source(archive_dir)))
    print(f"\n[demo] 2. ingest with Ray Data into {shards_dir}")
    result = run_ingest(IngestConfig(source=archive_dir, out=shards_dir, size=args.shard_size))
    print(format_result(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mura",
        description="Batch screening of musculoskeletal radiographs (MURA): synthesize, "
        "inspect, and (in later stages) ingest, train, screen archives on Ray.",
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
    p.add_argument("--studies", type=int, required=True, help="number of studies")
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
        help="fraction of abnormal studies (default 0.4, about MURA's)",
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
    p.add_argument("source", type=Path, help="archive root folder")
    p.add_argument("--kind", choices=KINDS, default=None, help="skip detection")
    p.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="labels CSV for a DICOM tree or image folder (default: ROOT/labels.csv)",
    )
    p.set_defaults(func=cmd_inspect)

    ingest.register(sub)
    train.register(sub)

    p = sub.add_parser(
        "demo",
        help="run the system end to end on a small synthetic archive",
        description="The embedded default: synthesize a small archive and "
        "print its summary (later stages: ingest, train, screen).",
    )
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="working folder")
    p.add_argument("--studies", type=int, default=60, help="studies to synthesize (default 60)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--size", type=int, default=320, help="longest image side (default 320)")
    p.add_argument(
        "--shard-size",
        type=int,
        default=224,
        help="pixel size of the ingested shards (default 224)",
    )
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.func, args, getattr(args, "extra_errors", ()))


if __name__ == "__main__":
    sys.exit(main())
