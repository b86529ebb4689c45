"""The server process: started in its own process group with a private log, waited on until
/health answers, stopped by its group id (uvicorn workers included)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from mura_core.errors import ConfigError
from pipelines.registry.server.auth import (
    AUTH_ENV,
    admin_password,
    auth_env,
    check_auth,
    refuse_open_server,
    write_auth_config,
)
from pipelines.registry.server.config import (
    ARTIFACTS_DIR,
    DB_NAME,
    LOG_NAME,
    MlflowServerError,
    ServerConfig,
)
from pipelines.registry.server.network import (
    advertised_host,
    allowed_hosts,
    free_or_taken,
    http_url,
    is_loopback,
    local_host,
    origins,
    own_names,
)


@dataclass
class MlflowServer:
    """A running `mlflow server`: `uri` is what clients export as MLFLOW_TRACKING_URI."""

    process: subprocess.Popen[bytes]
    uri: str
    local_uri: str  # how this machine reaches it (health checks)
    host: str
    port: int
    store: Path
    db: Path
    artifacts: str
    log: Path
    username: str | None = None  # the admin user when MLflow's basic auth is on
    _log_offset: int = field(default=0, repr=False)

    @property
    def auth(self) -> bool:
        return self.username is not None

    @property
    def backend_store_uri(self) -> str:
        return f"sqlite:///{self.db}"

    def poll(self) -> int | None:
        return self.process.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.process.wait(timeout)

    def healthy(self, timeout: float = 2.0) -> bool:
        return _health(self.local_uri, timeout)

    def log_tail(self, lines: int = 3) -> str:
        return _tail(self.log, self._log_offset, lines)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM the server's process group, SIGKILL what is left after `timeout`."""
        pgid = self.process.pid  # start_new_session: the server leads its own group
        if self.process.poll() is None:
            _signal_group(pgid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(pgid, signal.SIGKILL)
                self.process.wait(timeout)
        # uvicorn workers outliving their parent (it was killed) go with the group
        deadline = time.monotonic() + timeout
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
        return self.process.returncode

    def __enter__(self) -> MlflowServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(cfg: ServerConfig) -> MlflowServer:
    """Start `mlflow server` for `cfg` and return once /health answers 200 (and, with auth,
    once an unauthenticated request gets 401 and the admin's credentials 200)."""
    refuse_open_server(cfg)  # first: nothing is created or started for a refused server
    password = admin_password(cfg)  # None without authentication
    store = _writable_folder(Path(cfg.store).expanduser().resolve(), "MLflow store")
    db = store / DB_NAME
    if db.exists() and not os.access(db, os.W_OK):
        raise MlflowServerError(f"MLflow store {db}: database file not writable")
    artifacts = _artifacts_destination(cfg.artifacts, store)
    if cfg.workers is not None and cfg.workers < 1:
        raise ConfigError("workers must be >= 1")
    port = free_or_taken(cfg.host, cfg.port)

    command = _command(cfg, db, artifacts, port)
    env = _server_env(cfg, store, password)
    log = store / LOG_NAME
    with _open_log(log) as out:
        out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
        out.flush()
        offset = out.tell()
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=store,  # anything MLflow writes relative to its CWD stays in the store
            env=env,
            start_new_session=True,  # own process group: stop() kills exactly this tree
            umask=0o077 if password is not None else -1,  # its databases: its user's only
        )
    server = MlflowServer(
        process=process,
        uri=http_url(advertised_host(cfg.host), port),
        local_uri=http_url(local_host(cfg.host), port),
        host=cfg.host,
        port=port,
        store=store,
        db=db,
        artifacts=artifacts,
        log=log,
        username=cfg.admin_username if password is not None else None,
        _log_offset=offset,
    )
    try:
        _wait_healthy(server, cfg.timeout)
        if password is not None:
            check_auth(server, password, cfg.admin_password_file)
    except BaseException:
        server.stop(timeout=5)
        raise
    return server


def _server_env(cfg: ServerConfig, store: Path, password: str | None) -> dict[str, str]:
    env = dict(os.environ)
    for name in AUTH_ENV:  # only what this start sets: never an inherited admin password
        env.pop(name, None)
    if not cfg.job_execution:
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    if password is not None:
        env.update(auth_env(write_auth_config(store, cfg.admin_username), cfg, password))
    return env


def _command(cfg: ServerConfig, db: Path, artifacts: str, port: int) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{db}",
        "--serve-artifacts",
        "--artifacts-destination",
        artifacts,
        "--host",
        cfg.host,
        "--port",
        str(port),
    ]
    if cfg.auth:
        command += ["--app-name", "basic-auth"]
    if cfg.workers is not None:
        command += ["--workers", str(cfg.workers)]
    if not is_loopback(cfg.host):
        names = own_names(cfg.host)
        command += ["--allowed-hosts", ",".join(allowed_hosts(names, cfg.allowed_hosts))]
        command += ["--cors-allowed-origins", ",".join(origins(names, port))]
    elif cfg.allowed_hosts:
        command += ["--allowed-hosts", ",".join(allowed_hosts([], cfg.allowed_hosts))]
    return command


def _open_log(log: Path):  # -> BinaryIO; a new log is private (0600), an old one kept as is
    return os.fdopen(os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")


def _wait_healthy(server: MlflowServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = server.poll()
        if status is not None:
            raise MlflowServerError(
                f"mlflow server on {server.host}:{server.port} exited with status {status} "
                f"before answering /health: {server.log_tail()} (log: {server.log})"
            )
        if server.healthy(timeout=1.0):
            return
        if time.monotonic() > deadline:
            raise MlflowServerError(
                f"mlflow server did not answer {server.local_uri}/health within {timeout:.0f}s: "
                f"{server.log_tail()} (log: {server.log})"
            )
        time.sleep(0.25)


def _health(uri: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _writable_folder(folder: Path, what: str) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise MlflowServerError(f"{what} {folder}: not a writable folder ({reason})") from exc
    return folder


def _artifacts_destination(artifacts: str | Path | None, store: Path) -> str:
    if artifacts is None:
        return str(_writable_folder(store / ARTIFACTS_DIR, "artifacts folder"))
    text = str(artifacts)
    if "://" in text and not text.startswith("file://"):
        return text  # s3://, gs://, … — the server's credentials, checked by MLflow
    path = Path(text.removeprefix("file://")).expanduser().resolve()
    return str(_writable_folder(path, "artifacts folder"))


def _tail(log: Path, offset: int, lines: int) -> str:
    try:
        with log.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no server log)"
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    tail = " | ".join(kept[-lines:]) or "(no output)"
    return tail if len(tail) <= 500 else "…" + tail[-500:]


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """Any live (non-zombie) process left in the group?"""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for stat_file in proc.glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            # pid (comm) state ppid pgrp …; comm may hold spaces: split after the last ')'
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False
