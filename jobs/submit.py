"""`mura submit <job> [args] --address http://HEAD:8265`: run a job on a Ray cluster."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from jobs.common import job_main
from mura_core.errors import ConfigError
from pipelines.runtime.submit import JOBS, SubmitConfig, credentials_left_here, submit

DESCRIPTION = (
    "Submit `python -m jobs.JOB ARGS` to a Ray cluster through its Jobs API (the dashboard "
    "address, http://HEAD:8265), with this project as the uploaded working_dir (.gitignore "
    "and .rayignore keep the venv and data out) and MLFLOW_TRACKING_URI passed on when set. "
    "Streams the job's logs and exits 0 when it succeeds, 1 otherwise. Paths in ARGS are "
    "paths on the cluster. Token auth (Ray 2.60 default): the token comes from "
    "RAY_AUTH_TOKEN or ~/.ray/auth_token. Secrets are not sent: Ray writes a job's "
    "environment to its logs, so MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD stay "
    "here and the cluster's nodes sign in to MLflow with their own ~/.mlflow/credentials "
    "(mode 0600); an --env named like a secret (PASSWORD, TOKEN, SECRET) is refused."
)


def _env(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--env expects KEY=VALUE, got {text!r}")
    return key, value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("job", choices=JOBS, help="the job module to run (jobs.<job>)")
    p.add_argument(
        "--address",
        default=None,
        help="Ray dashboard / Jobs API address, e.g. http://HEAD:8265 (required; may also "
        "come after the job's arguments; default $RAY_ADDRESS when it is an http address)",
    )
    p.add_argument(
        "--env",
        type=_env,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment variable for the job (repeatable); not for secrets: Ray writes a "
        "job's environment to its nodes' logs, so names like *_PASSWORD or *_TOKEN are refused",
    )
    p.add_argument("--no-wait", action="store_true", help="submit and return the job id")
    p.add_argument(
        "args",
        nargs=argparse.REMAINDER,
        help="the job's own arguments (see `mura JOB --help`); put them after the job name",
    )


def split_own_flags(
    rest: Sequence[str],
) -> tuple[list[str], str | None, list[tuple[str, str]], bool]:
    """`mura submit JOB ARGS --address A`: pull submit's own flags out of the job's args
    (wherever they are), so the documented order works. The jobs' own `--address` (the Ray
    cluster to join) is meaningless inside a submitted job, which joins its cluster."""
    job_args: list[str] = []
    address, env, no_wait = None, [], False
    items = iter(rest)
    for item in items:
        if item == "--":
            continue
        if item in ("--address", "--env"):
            value = next(items, None)
            if value is None:
                raise ConfigError(f"{item} needs a value")
            if item == "--address":
                address = value
            else:
                env.append(_env(value))
        elif item.startswith("--address="):
            address = item.split("=", 1)[1]
        elif item.startswith("--env="):
            env.append(_env(item.split("=", 1)[1]))
        elif item == "--no-wait":
            no_wait = True
        else:
            job_args.append(item)
    return job_args, address, env, no_wait


def command(args: argparse.Namespace) -> int:
    job_args, address, env, no_wait = split_own_flags(args.args)
    address = address or args.address or os.environ.get("RAY_ADDRESS", "")
    if not address.startswith(("http://", "https://")):
        raise ConfigError(
            "--address http://HEAD:8265 is required (the Ray dashboard / Jobs API address)"
        )
    args.no_wait = args.no_wait or no_wait
    cfg = SubmitConfig(
        job=args.job,
        args=tuple(job_args),
        address=address,
        env=dict(args.env + env),
        wait=not args.no_wait,
    )
    if credentials_left_here():
        print(
            f"mura: note: {' and '.join(credentials_left_here())} stay here (Ray would write "
            "them to its logs): the job signs in to MLflow with the nodes' own "
            "~/.mlflow/credentials",
            file=sys.stderr,
            flush=True,
        )
    result = submit(cfg)
    print(f"job {result.job_id}: {result.status} ({result.seconds:.0f}s)", file=sys.stderr)
    return 0 if result.status == "SUCCEEDED" or args.no_wait else 1


def register(sub: argparse._SubParsersAction, summary: str) -> None:
    p = sub.add_parser("submit", help=summary, description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=command)


def main(argv: Sequence[str] | None = None) -> int:
    return job_main("submit", DESCRIPTION, add_arguments, command, argv)


if __name__ == "__main__":
    sys.exit(main())
