"""Shared CLI plumbing: one-line user errors, progress counters."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mura_core.privacy import PrivacyError
from mura_core.shards import ShardsError
from mura_core.sources import KINDS, SourceError

USER_ERRORS: tuple[type[BaseException], ...] = (
    SourceError,
    ShardsError,
    PrivacyError,
    FileExistsError,
    ValueError,
    OSError,
)


def add_source_arguments(
    p: argparse.ArgumentParser, help: str = "archive root folder", metavar: str | None = None
) -> None:
    """SOURCE, --kind and --labels: how every command that reads an archive names it."""
    p.add_argument("source", type=Path, help=help, metavar=metavar)
    p.add_argument("--kind", choices=KINDS, default=None, help="source kind (default: detect)")
    p.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="labels CSV for a DICOM tree or image folder (default: SOURCE/labels.csv)",
    )


def progress(label: str) -> Callable[[int, int], None]:
    """A one-line progress counter on stderr, redrawn in place on a terminal."""
    start = time.perf_counter()
    tty = sys.stderr.isatty()

    def report(done: int, total: int) -> None:
        if not tty and done != total and done % max(1, total // 10):
            return
        rate = done / max(time.perf_counter() - start, 1e-9)
        end = "\n" if done == total or not tty else "\r"
        print(f"{label}: {done}/{total} ({rate:.1f}/s)", end=end, file=sys.stderr, flush=True)

    return report


def run_command(
    func: Callable[[argparse.Namespace], int],
    args: argparse.Namespace,
    extra_errors: Sequence[type[BaseException]] = (),
) -> int:
    """Call a command; known user errors become `mura: error: …` on one line, exit 1."""
    # MLflow's INFO lines (creating tables, …) are noise in a command's output
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    try:
        return int(func(args))
    except (*USER_ERRORS, *extra_errors) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"mura: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mura: interrupted", file=sys.stderr)
        return 130
