"""MLflow's basic authentication for the server: the admin password read from a private
file, the auth config written without secrets, the secret passed in the environment, and real
requests that prove it works (401 without credentials, 200 with the admin's)."""

from __future__ import annotations

import base64
import importlib.util
import os
import secrets
import stat
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from mura_core.errors import ConfigError
from pipelines.registry.server.config import (
    AUTH_CACHE_S,
    AUTH_CONFIG_NAME,
    AUTH_DB_NAME,
    MIN_PASSWORD,
    PROBE,
    USERNAME,
    MlflowServerError,
    ServerConfig,
)
from pipelines.registry.server.network import is_loopback

if TYPE_CHECKING:
    from pipelines.registry.server.process import MlflowServer

AUTH_ENV = (
    "MLFLOW_AUTH_CONFIG_PATH",
    "MLFLOW_AUTH_ADMIN_USERNAME",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
)


def admin_password(cfg: ServerConfig) -> str | None:
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


def write_auth_config(store: Path, username: str) -> Path:
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


def auth_env(config: Path, cfg: ServerConfig, password: str) -> dict[str, str]:
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_USERNAME": cfg.admin_username,
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,  # used only to create the admin user
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),  # the UI's CSRF key
    }


def check_auth(server: MlflowServer, password: str, password_file: Path | None) -> None:
    """With real requests: none gets 401, the admin's credentials get 200."""
    url = server.local_uri + PROBE
    anonymous = http_status(url)
    if anonymous != 401:
        raise MlflowServerError(
            f"mlflow server answered an unauthenticated request with HTTP {anonymous}, not "
            f"401: authentication is not working (log: {server.log})"
        )
    admin = http_status(url, basic_auth(server.username or "", password))
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


def http_status(url: str, authorization: str | None = None, timeout: float = 10.0) -> int | None:
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
