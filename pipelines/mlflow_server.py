"""A real `mlflow server` for a cluster: SQLite backend store, proxied artifacts, /health-checked,
and MLflow's own authentication whenever it listens beyond this machine.

`start_server(ServerConfig(store=...))` runs `python -m mlflow server` in its own process
group with

- `--backend-store-uri sqlite:////<store>/mlflow.db` (runs, metrics, model registry),
- `--serve-artifacts --artifacts-destination <store>/artifacts` (or `artifacts=`): clients
  upload and download artifacts over HTTP (`mlflow-artifacts:/…`), so Ray workers on other
  nodes need no shared file system — only the server writes there,
- `--host 127.0.0.1` unless told otherwise, `--port 5000` (0: a free port),

waits until `GET /health` answers 200 and returns an `MlflowServer` handle (process, URI to
export, log file) whose `stop()` terminates the process group it started. The server's
output goes to `<store>/mlflow-server.log`; a start that fails raises `MlflowServerError`
with one line naming the cause and the log's last lines.

Authentication. Anyone who reaches an open MLflow server can read, overwrite and delete runs
and registered models. With `admin_password_file` the server runs MLflow's basic-auth app
(`--app-name basic-auth`): every request but `/health` and the UI's static files needs HTTP
basic credentials (401 without, or with a wrong password), and clients send theirs from
`MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD` or `~/.mlflow/credentials`. Beyond
loopback a server without it is refused (`MlflowServerError`, before anything starts) unless
`insecure=True` says so. How the secret travels:

- the password file must be private (no group or other permission bits) and hold one line
  of at least 12 characters (MLflow's password policy);
- `<store>/basic_auth.ini` (written 0600 at every start, no secret in it) names the auth
  database `<store>/basic_auth.db` (users, PBKDF2 password hashes, permissions), the admin's
  name and `default_permission = READ` (signed-in users may read everything; writing needs
  the admin or a grant). `MLFLOW_AUTH_CONFIG_PATH` points the server at it;
- the password reaches the server in its environment (`MLFLOW_AUTH_ADMIN_PASSWORD`, which
  only its owner can read in /proc), never on a command line, in a file or in the log. MLflow
  uses it only to create the admin user in an empty auth database; a password file changed
  later no longer matches, which the start checks and reports;
- a random `MLFLOW_FLASK_SERVER_SECRET_KEY` per start (the UI's CSRF key), same environment;
- the server runs with umask 077: the databases and artifacts it creates are its own user's.

After /health the start checks, with real requests, that an unauthenticated API call gets 401
and the admin's credentials get 200.

MLflow 3.x's security middleware rejects API requests (HTTP 403, "Invalid Host header")
whose Host header is not localhost or a private IP — `/health` is exempt, so a health check
alone does not prove clients can use it. When bound beyond loopback this module passes
`--allowed-hosts` (MLflow's defaults + this machine's host names and addresses + any
`allowed_hosts`) and `--cors-allowed-origins` (this machine's own `http://name:port`, so the
UI works from a browser elsewhere).

No Ray and no MLflow import here: the server is a subprocess.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import importlib.util
import ipaddress
import os
import re
import secrets
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from mura_core.errors import ConfigError, MuraError

DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "artifacts"
LOG_NAME = "mlflow-server.log"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
AUTH_DB_NAME = "basic_auth.db"
AUTH_CONFIG_NAME = "basic_auth.ini"
DEFAULT_ADMIN = "admin"
MIN_PASSWORD = 12  # MLflow's password policy (mlflow.utils.validation._validate_password)
USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]*")  # no ':' (basic auth), no '%' (INI)
AUTH_CACHE_S = 60  # a worker re-checks a good password after this long (MLflow's auth cache)
PROBE = "/api/2.0/mlflow/experiments/search?max_results=1"  # an API call every user may make


class MlflowServerError(MuraError):
    """The server cannot start (store, port, address, credentials) or did not become healthy."""


@dataclass(frozen=True)
class ServerConfig:
    store: Path = Path("mlflow-store")
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0: pick a free port
    artifacts: str | Path | None = None  # folder or URI (s3://…); default <store>/artifacts
    workers: int | None = None  # uvicorn workers; None: MLflow's default (4)
    allowed_hosts: tuple[str, ...] = ()  # extra Host headers to accept (beyond loopback)
    timeout: float = 120.0  # seconds to wait for /health
    job_execution: bool = False  # MLflow's GenAI job runner (huey): not needed for tracking
    admin_password_file: Path | None = None  # MLflow's basic auth on: the admin's password
    admin_username: str = DEFAULT_ADMIN
    insecure: bool = False  # beyond loopback without authentication, knowingly

    @property
    def auth(self) -> bool:
        return self.admin_password_file is not None


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


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def start_server(cfg: ServerConfig) -> MlflowServer:
    """Start `mlflow server` for `cfg` and return once /health answers 200 (and, with auth,
    once an unauthenticated request gets 401 and the admin's credentials 200)."""
    refuse_open_server(cfg)  # first: nothing is created or started for a refused server
    password = _admin_password(cfg)  # None without authentication
    store = _writable_folder(Path(cfg.store).expanduser().resolve(), "MLflow store")
    db = store / DB_NAME
    if db.exists() and not os.access(db, os.W_OK):
        raise MlflowServerError(f"MLflow store {db}: database file not writable")
    artifacts = _artifacts_destination(cfg.artifacts, store)
    if cfg.workers is not None and cfg.workers < 1:
        raise ConfigError("workers must be >= 1")
    port = _free_or_taken(cfg.host, cfg.port)

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
        uri=_url(_advertised_host(cfg.host), port),
        local_uri=_url(_local_host(cfg.host), port),
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
            _check_auth(server, password, cfg.admin_password_file)
    except BaseException:
        server.stop(timeout=5)
        raise
    return server


def _server_env(cfg: ServerConfig, store: Path, password: str | None) -> dict[str, str]:
    env = dict(os.environ)
    for name in _AUTH_ENV:  # only what this start sets: never an inherited admin password
        env.pop(name, None)
    if not cfg.job_execution:
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    if password is not None:
        env.update(_auth_env(_write_auth_config(store, cfg.admin_username), cfg, password))
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
        names = _own_names(cfg.host)
        command += ["--allowed-hosts", ",".join(_allowed_hosts(names, cfg.allowed_hosts))]
        command += ["--cors-allowed-origins", ",".join(_origins(names, port))]
    elif cfg.allowed_hosts:
        command += ["--allowed-hosts", ",".join(_allowed_hosts([], cfg.allowed_hosts))]
    return command


def _open_log(log: Path):  # -> BinaryIO; a new log is private (0600), an old one kept as is
    return os.fdopen(os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")


# ---- authentication ---------------------------------------------------------------------

_AUTH_ENV = (
    "MLFLOW_AUTH_CONFIG_PATH",
    "MLFLOW_AUTH_ADMIN_USERNAME",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
)


def _admin_password(cfg: ServerConfig) -> str | None:
    """With authentication: the admin's name checked, MLflow's auth extra there, the password
    read from its private file. All before anything is created or started."""
    if cfg.admin_password_file is None:
        return None
    check_username(cfg.admin_username)
    check_auth_installed()
    return read_admin_password(cfg.admin_password_file)


def refuse_open_server(cfg: ServerConfig) -> None:
    """Beyond loopback, MLflow without authentication only when `insecure` says so."""
    if is_loopback(cfg.host) or cfg.auth or cfg.insecure:
        return
    raise MlflowServerError(
        f"--host {cfg.host} opens MLflow to other machines, and anyone who reaches it could "
        "read and overwrite runs and models: give --admin-password-file FILE (mode 0600) to "
        "turn on MLflow's authentication, or --insecure to run it open anyway"
    )


def read_admin_password(path: Path) -> str:
    """The admin password: one line of a private file (no group or other permissions)."""
    path = Path(path).expanduser()
    flag = "--admin-password-file"
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise MlflowServerError(f"{flag} {path}: not a file")
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise MlflowServerError(
                f"{flag} {path} is open to others (mode {stat.S_IMODE(mode):o}): chmod 600 it"
            )
        lines = path.read_text(encoding="utf-8").strip().splitlines()
    except OSError as exc:
        raise MlflowServerError(f"{flag} {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise MlflowServerError(f"{flag} {path}: not UTF-8 text") from exc
    if len(lines) != 1:
        raise MlflowServerError(f"{flag} {path}: expected one line, the password")
    if len(lines[0].strip()) < MIN_PASSWORD:
        raise MlflowServerError(
            f"{flag} {path}: the password must have at least {MIN_PASSWORD} characters "
            "(MLflow's minimum)"
        )
    return lines[0].strip()


def check_auth_installed() -> None:
    """MLflow's basic-auth app needs its `auth` extra (Flask-WTF, for the UI's CSRF checks)."""
    if importlib.util.find_spec("flask_wtf") is None:
        raise MlflowServerError(
            "MLflow's authentication needs Flask-WTF, which is not installed: "
            "pip install 'mlflow[auth]==3.17.2' (MLflow's auth extra)"
        )


def check_username(name: str) -> str:
    if not USERNAME.fullmatch(name):
        raise ConfigError(
            f"admin username {name!r}: use letters, digits and . _ @ - (no spaces or ':')"
        )
    return name


def _write_auth_config(store: Path, username: str) -> Path:
    """`<store>/basic_auth.ini`, 0600, rewritten at every start; it holds no secret."""
    config = store / AUTH_CONFIG_NAME
    text = (
        "# Written by `mura mlflow-server` at every start. No secret here: the admin password\n"
        "# reaches the server in its environment (MLFLOW_AUTH_ADMIN_PASSWORD).\n"
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{store / AUTH_DB_NAME}\n"
        f"admin_username = {username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "# a password checks in ~0.3 s (PBKDF2); a worker trusts a login it checked for a while\n"
        f"auth_cache_ttl_seconds = {AUTH_CACHE_S}\n"
    )
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), 0o600)  # an older, looser file is tightened too
        out.write(text)
    return config


def _auth_env(config: Path, cfg: ServerConfig, password: str) -> dict[str, str]:
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_USERNAME": cfg.admin_username,
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,  # used only to create the admin user
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),  # the UI's CSRF key
    }


def _check_auth(server: MlflowServer, password: str, password_file: Path | None) -> None:
    """With real requests: none gets 401, the admin's credentials get 200."""
    url = server.local_uri + PROBE
    anonymous = _status(url)
    if anonymous != 401:
        raise MlflowServerError(
            f"mlflow server answered an unauthenticated request with HTTP {anonymous}, not "
            f"401: authentication is not working (log: {server.log})"
        )
    admin = _status(url, basic_auth(server.username or "", password))
    if admin == 401:
        raise MlflowServerError(
            f"the admin user {server.username!r} in {server.store / AUTH_DB_NAME} has another "
            f"password than --admin-password-file {password_file} (MLflow sets it only when "
            "it creates the user): start with the old file, or change the password through "
            "MLflow's users/update-password API and update the file"
        )
    if admin != 200:
        raise MlflowServerError(
            f"mlflow server answered the admin's request with HTTP {admin}: "
            f"{server.log_tail()} (log: {server.log})"
        )


def basic_auth(username: str, password: str) -> str:
    """The `Authorization` header value for HTTP basic credentials."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _status(url: str, authorization: str | None = None, timeout: float = 10.0) -> int | None:
    request = urllib.request.Request(url)
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError, ValueError):
        return None


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


def _free_or_taken(host: str, port: int) -> int:
    """The port to use (0: a free one), or a one-line error when it cannot be bound."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"port must be 0..65535, not {port}")
    bind_host = "" if host in WILDCARD_HOSTS and host != "::" else host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # as uvicorn binds: TIME_WAIT leftovers do not count, a listener does
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((bind_host, port))
        except socket.gaierror as exc:
            raise MlflowServerError(f"cannot bind --host {host}: unknown host") from exc
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise MlflowServerError(
                    f"port {port} on {host} is already in use (another server?): "
                    "stop it or choose another --port"
                ) from exc
            if exc.errno == errno.EACCES:
                raise MlflowServerError(
                    f"port {port} on {host}: permission denied (ports below 1024 need root)"
                ) from exc
            if exc.errno == errno.EADDRNOTAVAIL:
                raise MlflowServerError(
                    f"cannot bind --host {host}: not an address of this machine"
                ) from exc
            raise MlflowServerError(f"cannot bind {host}:{port}: {exc.strerror or exc}") from exc
        return probe.getsockname()[1]


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _local_host(host: str) -> str:
    if host == "::":
        return "::1"
    return "127.0.0.1" if host in WILDCARD_HOSTS else host


def _advertised_host(host: str) -> str:
    """What other machines should connect to: the host itself, or this node's address."""
    if host not in WILDCARD_HOSTS:
        return host
    return primary_address() or socket.gethostname()


def primary_address() -> str | None:
    """This node's outward IPv4 address (the route to a public address; nothing is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the outgoing interface
            address = probe.getsockname()[0]
        except OSError:
            address = None
    if address and not ipaddress.ip_address(address).is_loopback:
        return address
    with contextlib.suppress(OSError):
        for found in socket.gethostbyname_ex(socket.gethostname())[2]:
            if not ipaddress.ip_address(found).is_loopback:
                return found
    return None


def _own_names(host: str) -> list[str]:
    """Names and addresses clients may use for this machine (Host headers to accept)."""
    names = [socket.gethostname(), socket.getfqdn()]
    if host not in WILDCARD_HOSTS:
        names.append(host)
    names.append(primary_address() or "")
    with contextlib.suppress(OSError):
        names += socket.gethostbyname_ex(socket.gethostname())[2]
    seen: list[str] = []
    for name in names:
        # IPv6 literals are left to MLflow's defaults (private fc00::/7) and --allowed-hosts
        if name and ":" not in name and name not in seen and not is_loopback(name):
            seen.append(name)
    return seen


# MLflow 3.x's default Host allow-list (mlflow.server.security_utils.get_default_allowed_hosts,
# copied: importing mlflow.server loads the whole server app). --allowed-hosts replaces it.
MLFLOW_DEFAULT_ALLOWED_HOSTS = (
    *("localhost", "127.0.0.1", "[::1]", "0.0.0.0"),
    *("localhost:*", "127.0.0.1:*", "[[]::1]:*", "0.0.0.0:*"),
    *("192.168.*", "10.*", *(f"172.{i}.*" for i in range(16, 32)), "fc00:*", "fd00:*"),
)


def _allowed_hosts(names: list[str], extra: tuple[str, ...]) -> list[str]:
    hosts = list(MLFLOW_DEFAULT_ALLOWED_HOSTS)  # keep localhost and private IPs working
    for name in [*names, *extra]:
        for pattern in (name,) if ":" in name else (name, f"{name}:*"):
            if pattern not in hosts:
                hosts.append(pattern)
    return hosts


def _origins(names: list[str], port: int) -> list[str]:
    return [f"http://{name}:{port}" for name in names]


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
