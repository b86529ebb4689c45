"""`mura mlflow-server` / `python -m jobs.mlflow_server`: a shared MLflow server, foreground.

Beyond loopback it runs with MLflow's authentication (`--admin-password-file`), or open only
when `--insecure` says so; the refusal is one `mura: error:` line before anything starts.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from jobs.common import job_main
from pipelines.registry.server import (
    AUTH_DB_NAME,
    DEFAULT_ADMIN,
    DEFAULT_HOST,
    DEFAULT_PORT,
    LOG_NAME,
    MIN_PASSWORD,
    MlflowServer,
    ServerConfig,
    is_loopback,
    start_server,
)

DESCRIPTION = (
    "Start a real `mlflow server` for jobs on several machines: runs, metrics and the model "
    "registry in STORE/mlflow.db (SQLite), artifacts uploaded through the server into "
    "STORE/artifacts (or --artifacts), so Ray workers need no shared file system. Prints the "
    "line to export (MLFLOW_TRACKING_URI=http://HOST:PORT) once /health answers, then stays "
    f"in the foreground (server log: STORE/{LOG_NAME}); Ctrl-C stops it. It binds 127.0.0.1 "
    "unless --host says otherwise. For a cluster, run it on the head with --host 0.0.0.0 "
    "--admin-password-file FILE: MLflow's own authentication, where every request needs a "
    "user and password (clients: MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or "
    "~/.mlflow/credentials). Beyond 127.0.0.1 it refuses to start without it unless "
    "--insecure says so."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--store",
        type=Path,
        metavar="DIR",
        default=Path("mlflow-store"),
        help="folder holding mlflow.db, artifacts/ and the server log (created; default "
        "./mlflow-store)",
    )
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        metavar="HOST",
        help=f"address to bind (default {DEFAULT_HOST}: this machine only; 0.0.0.0: every "
        "interface, for a cluster, with --admin-password-file or --insecure)",
    )
    p.add_argument(
        "--port",
        type=int,
        metavar="PORT",
        default=DEFAULT_PORT,
        help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    p.add_argument(
        "--artifacts",
        default=None,
        metavar="PATH",
        help="where artifacts land: a local or shared folder, or an object-store URI such as "
        "s3://bucket/mlflow (default STORE/artifacts)",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        default=None,
        help="server worker processes (default: MLflow's, 4)",
    )
    p.add_argument(
        "--allowed-hosts",
        default=None,
        metavar="HOSTS",
        help="extra comma-separated Host headers to accept, e.g. mlflow.example.org "
        "(localhost, private IPs and this machine's names are always accepted)",
    )
    auth = p.add_argument_group(
        "authentication",
        "MLflow's basic-auth app: users and password hashes in STORE/" + AUTH_DB_NAME,
    )
    auth.add_argument(
        "--admin-password-file",
        type=Path,
        metavar="FILE",
        default=None,
        help="turn on MLflow's authentication; FILE holds the admin user's password (one "
        f"line, at least {MIN_PASSWORD} characters, mode 0600: never on the command line). "
        "MLflow creates the admin with it on the first start; later starts check it still "
        "matches. Required beyond 127.0.0.1, optional on it",
    )
    auth.add_argument(
        "--admin-username",
        default=DEFAULT_ADMIN,
        metavar="NAME",
        help=f"the admin user's name (default {DEFAULT_ADMIN})",
    )
    auth.add_argument(
        "--insecure",
        action="store_true",
        help="beyond 127.0.0.1, run without authentication anyway: anyone who reaches the "
        "port can read, overwrite and delete runs and registered models",
    )
    p.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=120.0,
        help="seconds to wait for the server to answer /health (default 120)",
    )


def _tell_clients(server: MlflowServer, args: argparse.Namespace) -> None:
    """How clients sign in (never the password itself), or the warning of an open server."""
    if server.auth:
        print(f"export MLFLOW_TRACKING_USERNAME={server.username}", flush=True)
        print(
            f"clients sign in as {server.username} with the password in "
            f"{args.admin_password_file}: export MLFLOW_TRACKING_PASSWORD as well, or put both "
            "in ~/.mlflow/credentials (mode 0600) on every machine that logs here",
            file=sys.stderr,
            flush=True,
        )
    elif not is_loopback(args.host):
        print(
            f"mura: warning: --host {args.host} lets every machine that reaches port "
            f"{server.port} read and write this MLflow store (--insecure: no "
            "authentication): keep the port behind a firewall",
            file=sys.stderr,
            flush=True,
        )


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def command(args: argparse.Namespace) -> int:
    cfg = ServerConfig(
        store=args.store,
        host=args.host,
        port=args.port,
        artifacts=args.artifacts,
        workers=args.workers,
        allowed_hosts=tuple(h.strip() for h in (args.allowed_hosts or "").split(",") if h.strip()),
        timeout=args.timeout,
        admin_password_file=args.admin_password_file,
        admin_username=args.admin_username,
        insecure=args.insecure,
    )
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    server = None
    try:
        server = start_server(cfg)
        print(
            f"MLflow server at {server.uri} (store {server.store}: {server.db.name}, "
            f"artifacts {server.artifacts}; log {server.log})",
            flush=True,
        )
        print(f"export MLFLOW_TRACKING_URI={server.uri}", flush=True)
        _tell_clients(server, args)
        print("Ctrl-C stops it.", file=sys.stderr, flush=True)
        status = server.wait()
        server.stop(timeout=5)  # whatever of its process group outlived it
        print(
            f"mura: error: mlflow server exited unexpectedly (status {status}): "
            f"{server.log_tail()} (log: {server.log})",
            file=sys.stderr,
        )
        return (status if status >= 0 else 128 - status) or 1
    except KeyboardInterrupt:
        if server is None:
            raise
        print("stopping the MLflow server…", file=sys.stderr, flush=True)
        server.stop()
        print("MLflow server stopped", file=sys.stderr, flush=True)
        return 0
    finally:
        if server is not None and server.poll() is None:
            server.stop()
        signal.signal(signal.SIGTERM, previous)


def register(sub: argparse._SubParsersAction, summary: str) -> None:
    p = sub.add_parser("mlflow-server", help=summary, description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=command)


def main(argv: Sequence[str] | None = None) -> int:
    return job_main("mlflow_server", DESCRIPTION, add_arguments, command, argv)


if __name__ == "__main__":
    sys.exit(main())
