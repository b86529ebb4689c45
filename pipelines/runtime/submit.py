"""`mura submit`: run a job module on a Ray cluster through the Jobs API, logs streamed back.

The entrypoint is `python -m jobs.<job> <args>` — exactly what a user would pass to `ray job
submit` — with the project as the runtime_env `working_dir` (uploaded; `.gitignore` and
`.rayignore` keep the venv, data and outputs out) and environment variables for the job
(`MLFLOW_TRACKING_URI` when set here, plus any `--env KEY=VALUE`). Ray 2.60 turns on token
auth: the client sends the token from `RAY_AUTH_TOKEN` or the token file
(`~/.ray/auth_token`) by itself; a missing or wrong token becomes a one-line error naming the
address.

Secrets never travel in a job's environment. Ray 2.60 writes a job's `env_vars` in plain text
to `runtime_env_agent.log` on every node that runs it ("Creating runtime env: {"env_vars":
…}", a world-readable file under /tmp/ray) and shows them in the job's info (`ray job list`,
the dashboard). So MLflow's credentials (`MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`,
for a server started with `--admin-password-file`) are not forwarded: the cluster's nodes
sign in with their own `~/.mlflow/credentials` (mode 0600), which MLflow reads in every
process (driver, Train controller, workers). An `--env` whose name says it holds a secret
(a PASSWORD, TOKEN, SECRET, CREDENTIALS or API_KEY part, like HF_TOKEN; not a …_PATH or
…_FILE naming where one lies) is refused with a one-line error.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mura_core.errors import MuraError

PROJECT = Path(__file__).resolve().parents[1]
JOBS = ("ingest", "train", "pretrain", "evaluate", "screen", "nightly")
FORWARDED_ENV = ("MLFLOW_TRACKING_URI",)
# kept here: Ray logs a job's env_vars on its nodes (see above); nodes have their own
CREDENTIAL_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
# a name part that says "secret" (HF_TOKEN, AWS_SECRET_ACCESS_KEY), not a path to one
SECRET_NAME = re.compile(
    r"^(?!.*_(PATH|FILE|DIR)$)(.*_)?(PASSWORD|PASSWD|TOKEN|SECRET|CREDENTIALS?|PRIVATE_KEY|API_KEY)(_|$)",
    re.IGNORECASE,
)
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
AGENT_WAIT_S = 90


class SubmitError(MuraError):
    """The job could not be submitted (address, token, bad job name)."""


@dataclass(frozen=True)
class SubmitConfig:
    job: str
    args: tuple[str, ...]
    address: str
    env: dict[str, str] = field(default_factory=dict)
    working_dir: Path = PROJECT
    wait: bool = True

    def __post_init__(self) -> None:
        if self.job not in JOBS:
            raise SubmitError(f"unknown job {self.job!r}: choose one of {', '.join(JOBS)}")
        for key in self.env:
            check_not_secret(key)


def check_not_secret(key: str) -> str:
    """A job's env_vars end up in Ray's logs and job info: no secrets among them."""
    if SECRET_NAME.search(key) or key in CREDENTIAL_ENV:
        raise SubmitError(
            f"--env {key}: Ray writes a job's environment to its nodes' logs and its job info, "
            "so secrets do not go there; MLflow credentials belong in ~/.mlflow/credentials "
            "(mode 0600) on the cluster's nodes (docs/cluster.md)"
        )
    return key


def credentials_left_here() -> tuple[str, ...]:
    """MLflow credential variables set here that the job does not get (see the docstring)."""
    return tuple(k for k in CREDENTIAL_ENV if os.environ.get(k))


@dataclass(frozen=True)
class SubmitResult:
    job_id: str
    status: str
    seconds: float


def entrypoint(job: str, args: Sequence[str]) -> str:
    """The shell command the cluster runs: `python -m jobs.<job> …`, arguments quoted."""
    return shlex.join(["python", "-m", f"jobs.{job}", *args])


def runtime_env(cfg: SubmitConfig) -> dict[str, object]:
    env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    env.update(cfg.env)
    return {"working_dir": str(cfg.working_dir), "env_vars": env}


def _token_available() -> bool:
    return bool(
        os.environ.get("RAY_AUTH_TOKEN")
        or os.environ.get("RAY_AUTH_TOKEN_PATH")
        or (Path.home() / ".ray" / "auth_token").is_file()
    )


def _enable_token_auth() -> None:
    """A Ray 2.60 client sends its token only in token mode (`RAY_AUTH_MODE=token`): turn it
    on when a token is at hand and the user did not choose a mode."""
    if os.environ.get("RAY_AUTH_MODE") or not _token_available():
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    try:  # Ray caches its config at import; refresh it as `ray start` does
        from ray._private.authentication.authentication_token_setup import (
            _enable_token_auth as refresh,
        )

        refresh()
    except ImportError:
        pass


def _client(address: str):  # -> JobSubmissionClient, imported late: ray[default] needed
    from ray.job_submission import JobSubmissionClient

    _enable_token_auth()
    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # ConnectionError, RuntimeError, auth errors: all one line
        text = " ".join(str(exc).split())
        if any(word in text for word in ("401", "403", "Unauthorized", "Forbidden", "token")):
            raise SubmitError(
                f"Ray job server {address} refused the token: set RAY_AUTH_TOKEN or "
                f"~/.ray/auth_token to the cluster's token ({text[:160]})"
            ) from exc
        raise SubmitError(f"cannot reach the Ray job server at {address}: {text[:200]}") from exc


async def _tail(client, job_id: str, out: Callable[[str], None]) -> None:
    async for lines in client.tail_job_logs(job_id):
        out(lines)


def submit(cfg: SubmitConfig, out: Callable[[str], None] | None = None) -> SubmitResult:
    """Submit, stream the job's logs to `out` (stdout), wait for a terminal status."""
    write = out or (lambda text: print(text, end="", flush=True))
    client = _client(cfg.address)
    start = time.perf_counter()
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            job_id = client.submit_job(
                entrypoint=entrypoint(cfg.job, cfg.args), runtime_env=runtime_env(cfg)
            )
            break
        except Exception as exc:
            text = " ".join(str(exc).split())
            # a head that just started has no job agent yet: Ray answers 500 "try again"
            if "No available agent" in text and time.monotonic() < deadline:
                time.sleep(2)
                continue
            raise SubmitError(
                f"Ray job server {cfg.address} refused the job: {text[:200]}"
            ) from exc
    print(
        f"submitted {job_id} to {cfg.address}: {entrypoint(cfg.job, cfg.args)}",
        file=sys.stderr,
        flush=True,
    )
    if not cfg.wait:
        return SubmitResult(job_id, str(client.get_job_status(job_id)), 0.0)
    try:
        asyncio.run(_tail(client, job_id, write))
    except KeyboardInterrupt:
        print(f"\nstopped following; the job goes on (ray job stop {job_id})", file=sys.stderr)
        raise
    status = str(client.get_job_status(job_id))
    while status.split(".")[-1] not in TERMINAL:  # logs can end just before the status
        time.sleep(0.5)
        status = str(client.get_job_status(job_id))
    return SubmitResult(job_id, status.split(".")[-1], time.perf_counter() - start)
