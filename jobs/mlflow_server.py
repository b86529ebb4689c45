"""`mura mlflow-server` / `python -m jobs.mlflow_server`: a shared MLflow server, foreground."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines.mlflow_server import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    LOG_NAME,
    ServerConfig,
    is_loopback,
    start_server,
)

from .common import job_main

HELP = "run an MLflow tracking server for a cluster (SQLite + artifacts in one store folder)"
DESCRIPTION = (
    "Start a real `mlflow server` for jobs on several machines: runs, metrics and the model "
    "registry in STORE/mlflow.db (SQLite), artifacts uploaded through the server into "
    "STORE/artifacts (or --artifacts), so Ray workers need no shared file system. Prints the "
    "line to export (MLFLOW_TRACKING_URI=http://HOST:PORT) once /health answers, then stays "
    f"in the foreground (server log: STORE/{LOG_NAME}); Ctrl-C stops it. It binds 127.0.0.1 "
    "unless --host says otherwise: for a cluster, run it on the head with --host 0.0.0.0 and "
    "let only the cluster's machines reach the port (the server has no authentication)."
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
        "interface, for a cluster)",
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
    p.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=120.0,
        help="seconds to wait for the server to answer /health (default 120)",
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
        if not is_loopback(args.host):
            print(
                f"mura: warning: --host {args.host} lets every machine that reaches port "
                f"{server.port} read and write this MLflow store (no authentication): keep "
                "the port behind a firewall",
                file=sys.stderr,
                flush=True,
            )
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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mlflow-server", help=HELP, description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=command)


def main(argv: Sequence[str] | None = None) -> int:
    return job_main("mlflow_server", DESCRIPTION, add_arguments, command, argv)


if __name__ == "__main__":
    sys.exit(main())
