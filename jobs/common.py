"""Shared CLI plumbing: one-line user errors, tracebacks for bugs, a quiet console.

`run_command` calls a command. A `MuraError` (the user can fix it), raised here or inside a
Ray task, prints `mura: error: <one line>` and exits 1; Ctrl-C exits 130; anything else is a
bug: its traceback prints, then a one-line hint to report it, and the exit status is 70.
Commands that run Ray send everything Ray prints to a log file (`pipelines.runtime.console`) and
stop the local Ray they started before they return; `--verbose` / MURA_VERBOSE=1 keeps
Ray's output on the terminal.
"""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from mura_core.archive import DEFAULT_MAX_BYTES, KINDS, AccessPolicy, ArchiveSource, parse_source
from mura_core.archive.source import PACS_FORMS
from mura_core.body_parts import MURA_BODY_PARTS, BodyPart
from mura_core.errors import MuraError
from mura_core.pacs.address import (
    DEFAULT_AE_TITLE,
    DEFAULT_MODALITIES,
    PacsQuery,
    check_ae_title,
    load_auth,
)
from mura_core.pacs.client import PacsOptions
from pipelines.runtime.cluster import ray_for_a_command
from pipelines.runtime.console import console

RAY_COMMANDS = {"ingest", "train", "pretrain", "evaluate", "screen", "nightly", "demo"}
EX_SOFTWARE = 70  # sysexits.h: an internal software error


def source_argument(text: str) -> ArchiveSource:
    """SOURCE as the archive layer reads it: a PACS address (kept as typed) or a folder."""
    return parse_source(text)


def add_source_arguments(
    p: argparse.ArgumentParser, help: str = "archive root folder", metavar: str | None = None
) -> None:
    """SOURCE, --kind and --labels, and the PACS flags: how every command names an archive."""
    p.add_argument(
        "source", type=source_argument, help=f"{help}, or a PACS: {PACS_FORMS}", metavar=metavar
    )
    p.add_argument("--kind", choices=KINDS, default=None, help="source kind (default: detect)")
    p.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="labels CSV for a DICOM tree, image folder or PACS (study_instance_uid,label; "
        "default: SOURCE/labels.csv for a folder)",
    )
    add_access_arguments(p)
    add_pacs_arguments(p)


def add_access_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "archive files",
        "what of a folder archive is read: regular files only (FIFOs, devices and sockets "
        "are quarantined as not_a_regular_file, never opened), inside the archive root "
        "(links and CSV paths leading out of it are quarantined as outside_archive), at most "
        "--max-file-size each (too_large)",
    )
    g.add_argument(
        "--follow-links",
        action="store_true",
        help="follow links whose target is outside the archive root (default: quarantined)",
    )
    g.add_argument(
        "--max-file-size",
        type=float,
        default=DEFAULT_MAX_BYTES / 2**20,
        metavar="MB",
        help=f"largest file read, in MiB (default {DEFAULT_MAX_BYTES // 2**20})",
    )


def access_policy(args: argparse.Namespace) -> AccessPolicy:
    """The archive-files flags as a policy (checked here, before any work)."""
    return AccessPolicy(
        follow_links=bool(getattr(args, "follow_links", False)),
        max_bytes=int(getattr(args, "max_file_size", DEFAULT_MAX_BYTES / 2**20) * 2**20),
    )


def add_pacs_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "PACS source",
        "when SOURCE is a PACS: credentials (DICOMweb; else MURA_PACS_USERNAME / "
        "MURA_PACS_PASSWORD or MURA_PACS_TOKEN), our AE title (DIMSE) and which studies",
    )
    add_pacs_access_arguments(g)
    g.add_argument("--since", default=None, metavar="DATE", help="StudyDate from (YYYY-MM-DD)")
    g.add_argument("--until", default=None, metavar="DATE", help="StudyDate to (YYYY-MM-DD)")
    g.add_argument(
        "--modality",
        default=",".join(DEFAULT_MODALITIES),
        help=f"modalities to screen (default {','.join(DEFAULT_MODALITIES)})",
    )
    g.add_argument(
        "--body-part",
        default=None,
        choices=[str(b) for b in MURA_BODY_PARTS],
        help="only studies of this body part (default: all)",
    )


def add_pacs_access_arguments(g: argparse._ActionsContainer) -> None:
    """How to use a PACS: credentials (DICOMweb) and our AE title (DIMSE)."""
    g.add_argument(
        "--pacs-auth",
        type=Path,
        default=None,
        metavar="FILE",
        help="file holding one line user:password (mode 0600)",
    )
    g.add_argument(
        "--pacs-token",
        type=Path,
        default=None,
        metavar="FILE",
        help="file holding a bearer token (mode 0600)",
    )
    g.add_argument(
        "--ae-title",
        default=DEFAULT_AE_TITLE,
        help=f"our calling AE title for DIMSE (default {DEFAULT_AE_TITLE})",
    )


def pacs_access(args: argparse.Namespace) -> PacsOptions:
    """The PACS access flags (credentials read and checked here), the default query."""
    return PacsOptions(
        auth=load_auth(args.pacs_auth, args.pacs_token),
        ae_title=check_ae_title(args.ae_title, "--ae-title"),
    )


def pacs_options(args: argparse.Namespace) -> PacsOptions:
    """The PACS flags as options (credentials read and checked here, before any work)."""
    return replace(
        pacs_access(args),
        query=PacsQuery(
            since=args.since,
            until=args.until,
            modalities=tuple(args.modality.split(",")),
            body_part=BodyPart(args.body_part) if args.body_part else None,
        ),
    )


def add_worker_arguments(p: argparse.ArgumentParser) -> None:
    """Ray Train's workers: `mura train` and `mura pretrain`."""
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers (default 1)")
    p.add_argument("--gpu", action="store_true", help="GPU workers, bf16 autocast, channels_last")
    p.add_argument(
        "--cpus-per-worker",
        type=float,
        default=None,
        help="CPUs reserved per worker (default: leave one CPU to Ray Data, even after the "
        "largest worker node is lost)",
    )


def add_run_arguments(
    p: argparse.ArgumentParser, *, experiment: str, register: str, storage: str, seed: str
) -> None:
    """A Ray Train run and its MLflow run (`pipelines.train.session`): `mura train` and
    `mura pretrain`; the words that differ are the command's (defaults, what is seeded)."""
    p.add_argument("--experiment", default=experiment, help="MLflow experiment")
    p.add_argument("--register", default=None, help=f"registered model name (default {register})")
    p.add_argument("--tracking-uri", default=None, help="override MLFLOW_TRACKING_URI")
    p.add_argument(
        "--storage",
        type=Path,
        default=None,
        help=f"Ray Train storage for {storage} (default ./ray_results)",
    )
    p.add_argument(
        "--name",
        default=None,
        help="run name; the same name again resumes that run from its checkpoint",
    )
    p.add_argument(
        "--max-failures", type=int, default=2, help="worker failures to recover from (default 2)"
    )
    p.add_argument("--seed", type=int, default=0, help=f"seed of {seed} (default 0)")
    p.add_argument("--address", default=None, help="Ray cluster to join (default: local Ray)")


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


def wrapped_help(description: str, epilog: str | None = None) -> dict[str, object]:
    """Parser keywords of a command whose help is prose (wrapped) and examples (kept)."""
    kwargs: dict[str, object] = {
        "description": textwrap.fill(description, 88),
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }
    if epilog is not None:
        kwargs["epilog"] = epilog
    return kwargs


def register_command(
    sub: argparse._SubParsersAction,
    name: str,
    summary: str,
    kwargs: dict[str, object],
    add_arguments: Callable[[argparse.ArgumentParser], None],
    command: Callable[[argparse.Namespace], int],
) -> None:
    """`mura NAME`: its sub-parser, arguments and command."""
    p = sub.add_parser(name, help=summary, **kwargs)
    add_arguments(p)
    p.set_defaults(func=command)


def tool_main(
    name: str,
    summary: str,
    kwargs: dict[str, object],
    add_arguments: Callable[[argparse.ArgumentParser], None],
    command: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None = None,
) -> int:
    """`python -m jobs.NAME` of a command that needs no Ray (compare, monitor, feedback)."""
    parser = argparse.ArgumentParser(prog=f"python -m jobs.{name}", **kwargs)
    add_arguments(parser)
    return run_command(command, parser.parse_args(argv))
