"""`mura submit` against a real Ray head started here (`ray start --head`, token auth on).

The head is started with `--block` in its own process group, so the test stops exactly the
cluster it started (SIGTERM to that process, then its group), never other Ray instances.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from mura_core.checkpoints import ModelInfo, save_bundle
from mura_core.models import build_model
from mura_core.recipes import recipe
from mura_core.synth import SynthArchive
from pipelines.ports import free_port, free_ports

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Head:
    address: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Head]:
    token = secrets.token_hex(16)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("RAY_ADDRESS", None)
    gcs, dashboard, agent, agent_grpc, runtime_env, metrics = free_ports(6)
    log = (tmp_path_factory.mktemp("head") / "head.log").open("w")
    proc = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(gcs),
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(dashboard),
            "--num-cpus",
            "2",
            "--include-dashboard",
            "true",
            # ports of its own: other Ray instances on this machine (the test session's, a
            # developer's) hold the defaults, and the job agent would not start
            *("--dashboard-agent-listen-port", str(agent)),
            *("--dashboard-agent-grpc-port", str(agent_grpc)),
            *("--runtime-env-agent-port", str(runtime_env)),
            *("--metrics-export-port", str(metrics)),
            "--disable-usage-stats",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                request = urllib.request.Request(
                    f"{address}/api/version", headers={"Authorization": f"Bearer {token}"}
                )
                with urllib.request.urlopen(request, timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert proc.poll() is None, "ray start --head exited"
            assert time.monotonic() < deadline, "the Ray dashboard did not come up in 120 s"
            time.sleep(1)
        yield Head(address, env)
    finally:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of its group is left
        proc.wait()
        log.close()


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
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "SUCCEEDED" in done.stderr and "found" in done.stdout  # the job's own summary
    assert (shards / "manifest.json").is_file()

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
