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

No Ray and no MLflow import here: the server is a subprocess. The parts: `config` (the
configuration and file names), `process` (start, health, stop), `auth` (the password and
MLflow's basic-auth app), `network` (ports, addresses, allowed hosts).
"""

from __future__ import annotations

from pipelines.registry.server.auth import (
    basic_auth,
    check_auth_installed,
    check_username,
    read_admin_password,
)
from pipelines.registry.server.config import (
    ARTIFACTS_DIR,
    AUTH_CONFIG_NAME,
    AUTH_DB_NAME,
    DB_NAME,
    DEFAULT_ADMIN,
    DEFAULT_HOST,
    DEFAULT_PORT,
    LOG_NAME,
    MIN_PASSWORD,
    PROBE,
    MlflowServerError,
    ServerConfig,
)
from pipelines.registry.server.network import (
    MLFLOW_DEFAULT_ALLOWED_HOSTS,
    is_loopback,
    primary_address,
)
from pipelines.registry.server.process import MlflowServer, start_server

__all__ = [
    "ARTIFACTS_DIR",
    "AUTH_CONFIG_NAME",
    "AUTH_DB_NAME",
    "DB_NAME",
    "DEFAULT_ADMIN",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "LOG_NAME",
    "MIN_PASSWORD",
    "MLFLOW_DEFAULT_ALLOWED_HOSTS",
    "PROBE",
    "MlflowServer",
    "MlflowServerError",
    "ServerConfig",
    "basic_auth",
    "check_auth_installed",
    "check_username",
    "is_loopback",
    "primary_address",
    "read_admin_password",
    "start_server",
]
