"""MLflow plumbing: which store, is it reachable, experiments, git commit.

Tracking URI: `MLFLOW_TRACKING_URI` if set, else `sqlite:///<cwd>/mlflow.db` — absolute, since
Ray workers and the Train controller run in other working directories. Artifacts of a
SQLite store go to `<db folder>/mlartifacts` (also absolute, for the same reason).

A tracking server with authentication (`mura mlflow-server --admin-password-file`) takes
MLflow's own client credentials: `MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`, else
`~/.mlflow/credentials` (an INI file, `[mlflow]` with `mlflow_tracking_username` and
`mlflow_tracking_password`, mode 0600). MLflow reads them in every process that talks to the
server — the driver, the Ray Train controller, workers — so nothing here passes them around,
and a password never becomes part of a URI, a param or a log line: a URI that carries one
(`http://user:password@host`) is refused, and a refused login is a one-line error naming the
variables to set.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import mlflow
from mlflow.tracking import MlflowClient

from mura_core.errors import MuraError

DB_NAME = "mlflow.db"


class TrackingError(MuraError):
    """The tracking store cannot be used: fail before any worker starts."""


CREDENTIALS_HINT = (
    "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or put them in "
    "~/.mlflow/credentials (mode 0600)"
)


def resolve_tracking_uri(uri: str | None = None) -> str:
    """Explicit URI, else MLFLOW_TRACKING_URI, else an absolute SQLite file in the CWD."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri and urlparse(uri).scheme in ("http", "https") and urlparse(uri).password is not None:
        # it would be logged, printed and stored as a param wherever the URI is
        raise TrackingError(
            f"the MLflow tracking URI holds a password: drop it and {CREDENTIALS_HINT}"
        )
    if not uri:
        return f"sqlite:///{Path.cwd().resolve() / DB_NAME}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        relative = uri.removeprefix("sqlite:///")
        return f"sqlite:///{Path(relative).resolve()}"
    return uri


def sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def artifact_root(uri: str) -> str | None:
    """Where a new experiment keeps artifacts: beside a SQLite file; the server's default."""
    db = sqlite_path(uri)
    return (db.parent / "mlartifacts").as_uri() if db is not None else None


def check_tracking(uri: str, timeout: float = 5.0) -> MlflowClient:
    """A client for `uri`, or a one-line TrackingError naming it."""
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        import requests

        try:
            response = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
        except requests.RequestException as exc:
            raise TrackingError(
                f"MLflow tracking server {uri} unreachable: {type(exc).__name__}"
            ) from exc
        if response.status_code != 200:
            raise TrackingError(
                f"MLflow tracking server {uri} answered HTTP {response.status_code} on /health"
            )
    elif scheme == "sqlite":
        db = sqlite_path(uri)
        if db is None or not db.parent.is_dir() or not os.access(db.parent, os.W_OK):
            raise TrackingError(f"MLflow store {uri}: folder missing or not writable")
    elif scheme not in ("file", "databricks", "postgresql", "mysql", ""):
        raise TrackingError(f"unsupported MLflow tracking URI {uri!r}")
    client = tracking_client(uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as exc:  # the store's own errors vary by backend
        text = " ".join(str(exc).split())
        if scheme in ("http", "https") and "error code 401" in text:
            raise TrackingError(
                f"MLflow tracking server {uri} refused the login (HTTP 401): {CREDENTIALS_HINT}"
            ) from exc
        raise TrackingError(f"MLflow store {uri} unusable: {text[:200]}") from exc
    return client


def tracking_client(uri: str) -> MlflowClient:
    """A client for the runs *and* the registry of `uri`: models are registered in the
    tracking store (as `mura train` does), never in a registry that `mlflow.set_registry_uri`
    left in this process (it also exports MLFLOW_REGISTRY_URI), which a bare
    `MlflowClient(uri)` would search instead."""
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The experiment's id, creating it (with an absolute artifact root) when missing."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=artifact_root(client.tracking_uri))


def use_tracking(uri: str) -> None:
    """Point the fluent mlflow API at `uri` (for log_model and friends)."""
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


def git_commit(start: Path | None = None) -> str:
    """The project's commit, with '-dirty' when there are local changes; 'unknown' outside git."""
    folder = start or Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=folder, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
