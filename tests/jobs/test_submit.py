"""`mura submit` against a real Ray head started here (`ray start --head`, token auth on).

The head is `tests.raycluster.RayCluster` with no worker nodes: `ray start --block` in its own
session, stopped by its process ids, never other Ray instances.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from mura_core.checkpoints import save_bundle
from mura_core.model_info import ModelInfo
from mura_core.models import build_model
from mura_core.recipes import recipe
from mura_core.synth import SynthArchive
from pipelines.runtime.ports import free_port
from tests.raycluster import RayCluster

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Head:
    address: str
    env: dict[str, str]
    temp_dir: Path  # the cluster's Ray logs (runtime_env_agent.log logs a job's env_vars)


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Head]:
    """A one-node cluster of its own (`ray start --head`, token auth), stopped by its ids."""
    cluster = RayCluster(tmp_path_factory.mktemp("head"), cpus=2).start(workers=0)
    try:
        assert cluster.temp_dir is not None
        yield Head(cluster.dashboard, cluster.env, cluster.temp_dir)
    finally:
        cluster.stop()


def mura(head: Head, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`mura …` as a user runs it: RAY_AUTH_TOKEN exported, RAY_AUTH_MODE not set."""
    client_env = {k: v for k, v in (env or head.env).items() if k != "RAY_AUTH_MODE"}
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *argv],
        cwd=REPO,
        env=client_env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_ingest_and_screen_jobs_run_on_the_cluster(
    head: Head, mura_archive: SynthArchive, tmp_path: Path
) -> None:
    shards, report = tmp_path / "shards", tmp_path / "report"
    password = "pw-" + secrets.token_hex(12)  # MLflow's, set here: it must stay here
    signed_in = {**head.env, "MLFLOW_TRACKING_USERNAME": "admin"}
    done = mura(
        head,
        "submit",
        "ingest",
        str(mura_archive.root),
        "--out",
        str(shards),
        "--size",
        "32",
        "--address",
        head.address,
        env={**signed_in, "MLFLOW_TRACKING_PASSWORD": password},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "SUCCEEDED" in done.stderr and "found" in done.stdout  # the job's own summary
    assert (shards / "manifest.json").is_file()
    assert "mura: note: MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD stay here" in (
        done.stderr
    )
    logs = [p for p in head.temp_dir.rglob("*.log") if p.is_file()]
    assert any(p.name == "runtime_env_agent.log" for p in logs)  # where env_vars would be
    assert not [p for p in logs if password.encode() in p.read_bytes()]

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("cnn", size=32)
    bundle = save_bundle(
        tmp_path / "bundle", model, ModelInfo.from_recipe(recipe("seed-cnn").override(size=32))
    )
    done = mura(
        head,
        "submit",
        "screen",
        str(shards),
        "--out",
        str(report),
        "--model",
        str(bundle),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--address",
        head.address,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (report / "summary.json").is_file() and "flagged" in done.stdout


def test_bad_token_and_unreachable_address_are_one_line_errors(head: Head) -> None:
    bad = {**head.env, "RAY_AUTH_TOKEN": "0" * 32}
    done = mura(
        head, "submit", "ingest", "/nowhere", "--out", "/x", "--address", head.address, env=bad
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and lines[-1].startswith("mura: error:"), done.stderr
    assert head.address in lines[-1] and "token" in lines[-1]

    nobody = f"http://127.0.0.1:{free_port()}"
    done = mura(head, "submit", "ingest", "/nowhere", "--out", "/x", "--address", nobody)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and lines[-1].startswith("mura: error:"), done.stderr
    assert nobody in lines[-1]
