"""Shared CLI plumbing: one-line user errors, tracebacks for bugs, a quiet console.

`run_command` calls a command. A `MuraError` (the user can fix it), raised here or inside a
Ray task, prints `mura: error: <one line>` and exits 1; Ctrl-C exits 130; anything else is a
bug: its traceback prints, then a one-line hint to report it, and the exit status is 70.
Commands that run Ray send everything Ray prints to a log file (`pipelines.console`) and
stop the local Ray they started before they return; `--verbose` / MURA_VERBOSE=1 keeps
Ray's output on the terminal.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from mura_core.errors import MuraError
from mura_core.sources import KINDS
from pipelines.console import console
from pipelines.runtime import ray_for_a_command

RAY_COMMANDS = {"ingest", "train", "evaluate", "screen", "nightly", "demo"}
EX_SOFTWARE = 70  # sysexits.h: an internal software error


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


def progress(label: str, unit: str = "studies") -> Callable[[int, int], None]:
    """A `progress(done, total)` callback drawing a console bar (for mura_core's loops)."""
    bar = None

    def report(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = console.progress(label, total, unit)
        bar.update(done)
        if done >= total:
            bar.close()

    return report


def add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show Ray's own output (workers, warnings) on the terminal instead of in the "
        "run's log file (also MURA_VERBOSE=1)",
    )


def user_error(exc: BaseException) -> MuraError | None:
    """The `MuraError` that `exc` is or wraps, else None (a bug).

    Ray hands back errors from tasks and actors wrapped: `RayTaskError.cause` (its
    dual-inheritance subclasses are MuraErrors too, but their text carries the remote
    traceback), a Ray Train `WorkerGroupError.worker_failures` or `ControllerError`, or a
    `raise … from` chain (Ray Data's UserCodeException). Read by attribute: no Ray import.
    """
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        err = pending.pop(0)
        if id(err) in seen:
            continue
        seen.add(id(err))
        wrapped = [getattr(err, "cause", None), getattr(err, "controller_failure", None)]
        failures = getattr(err, "worker_failures", None)
        if isinstance(failures, dict):
            wrapped.extend(failures.values())
        inner = [e for e in wrapped if isinstance(e, BaseException)]
        if not inner and isinstance(err, MuraError):
            return err
        pending.extend(inner)
        if err.__cause__ is not None:
            pending.append(err.__cause__)
    return None


def command_name(func: Callable[..., object]) -> str:
    return func.__module__.rsplit(".", 1)[-1].replace("_", "-")


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Call a command: a user error is one line and exit 1, a bug its traceback and exit 70."""
    # MLflow's INFO lines (creating tables, …) are noise in a command's output
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    name = command_name(func)
    if getattr(args, "verbose", False):
        console.verbose = True
    try:
        if name not in RAY_COMMANDS:
            return int(func(args))
        with console.capture(name), ray_for_a_command():
            return int(func(args))
    except KeyboardInterrupt:
        print("mura: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        error = user_error(exc)
        if error is not None:
            message = " ".join(str(error).split()) or type(error).__name__
            print(f"mura: error: {message}", file=sys.stderr)
            return 1
        traceback.print_exc()
        summary = " ".join(f"{type(exc).__name__}: {exc}".split())
        print(
            f"mura: internal error: {summary} — this is a bug; please report it with the "
            "traceback above",
            file=sys.stderr,
        )
        return EX_SOFTWARE


def job_main(
    prog: str,
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    command: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None = None,
) -> int:
    """`python -m jobs.X`: the job's own parser (what `ray job submit` runs), then run it."""
    parser = argparse.ArgumentParser(prog=f"python -m jobs.{prog}", description=description)
    add_arguments(parser)
    add_verbose(parser)
    return run_command(command, parser.parse_args(argv))
