"""The MLflow server's configuration, its files' names and its one error type."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mura_core.errors import MuraError

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
