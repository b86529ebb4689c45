"""`mura submit` sends no secret in a job's environment (Ray would log it): no Ray needed here.

Ray 2.60 writes a job's `env_vars` in plain text to `runtime_env_agent.log` on its nodes and
shows them in the job's info, so MLflow's credentials stay on the submitting machine and an
`--env` named like a secret is refused before anything is sent. The real-cluster side (the
password set here is in none of the cluster's files) is in test_submit.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.runtime.ports import free_port
from pipelines.runtime.submit import SubmitConfig, SubmitError, runtime_env

REPO = Path(__file__).resolve().parents[2]


def test_mlflow_credentials_are_not_forwarded_and_the_uri_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://head:5000")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw-never-forwarded")
    cfg = SubmitConfig(job="train", args=(), address="http://head:8265", env={"SEED": "1"})
    assert runtime_env(cfg)["env_vars"] == {"MLFLOW_TRACKING_URI": "http://head:5000", "SEED": "1"}


@pytest.mark.parametrize(
    "key",
    ["MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_USERNAME", "MURA_PACS_PASSWORD", "HF_TOKEN"]
    + ["AWS_SECRET_ACCESS_KEY", "my_db_passwd"],
)
def test_secret_env_names_are_refused(key: str) -> None:
    with pytest.raises(SubmitError, match=f"--env {key}: Ray writes"):
        SubmitConfig(job="train", args=(), address="http://head:8265", env={key: "x"})


@pytest.mark.parametrize("key", ["TOKENIZERS_PARALLELISM", "RAY_AUTH_TOKEN_PATH", "SECRET_FILE"])
def test_names_that_only_look_close_are_kept(key: str) -> None:
    cfg = SubmitConfig(job="train", args=(), address="http://head:8265", env={key: "x"})
    assert runtime_env(cfg)["env_vars"][key] == "x"


def test_cli_refuses_a_password_in_env_in_one_line_without_echoing_it() -> None:
    secret = "pw-typed-on-the-command-line"
    done = subprocess.run(
        [sys.executable, "-m", "jobs.submit", "train", "/shards"]
        + ["--env", f"MLFLOW_TRACKING_PASSWORD={secret}"]
        + ["--address", f"http://127.0.0.1:{free_port()}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith("mura: error: --env MLFLOW_TRACKING_PASSWORD: Ray writes")
    assert secret not in done.stderr + done.stdout
