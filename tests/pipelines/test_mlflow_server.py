"""`mura mlflow-server`: a real `mlflow server` subprocess, used over HTTP like a cluster would.

Every server started here is stopped in a `finally`; the CLI tests also kill, by process
group, any server still running on their store (should the CLI itself die first).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mura_core.recipes import recipe
from mura_core.records import BodyPart
from mura_core.synth import SynthConfig, synthesize
from pipelines.ingest import IngestConfig, run_ingest
from pipelines.mlflow_server import (
    MLFLOW_DEFAULT_ALLOWED_HOSTS,
    MlflowServerError,
    ServerConfig,
    start_server,
)
from pipelines.model_store import resolve_model
from pipelines.ports import free_port
from pipelines.tracking import use_tracking
from pipelines.train import TrainConfig, run_training

REPO = Path(__file__).resolve().parents[2]


def _health(uri: str) -> int | None:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status
    except (urllib.error.URLError, OSError):
        return None


def _request(
    url: str, headers: dict[str, str], body: dict[str, object] | None = None
) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    if data:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _kill_servers_of(store: Path) -> None:
    """Safety net: SIGKILL the process group of any `mlflow server` using this store."""
    needle = f"sqlite:///{store.resolve()}/".encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError, ValueError):
            if needle in cmdline.read_bytes():
                pid = int(cmdline.parent.name)
                os.killpg(os.getpgid(pid), signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_training_over_http_lands_in_the_server_store(tmp_path: Path) -> None:
    synthesize(
        tmp_path / "archive",
        SynthConfig(studies=40, seed=2, size=96, sign_strength=4.0, body_parts=(BodyPart.FOREARM,)),
        workers=1,
    )
    run_ingest(IngestConfig(source=tmp_path / "archive", out=tmp_path / "shards", size=32))
    store = tmp_path / "store"
    server = start_server(ServerConfig(store=store, port=0, workers=2))
    try:
        uri = f"http://127.0.0.1:{server.port}"
        assert server.uri == uri and server.db == store / "mlflow.db"
        result = run_training(
            TrainConfig(
                shards=tmp_path / "shards",
                recipe=recipe("seed-cnn")
                .override(size=32, batch_size=32, epochs=2)
                .with_augment("flips"),
                tracking_uri=uri,
                storage=tmp_path / "ray_results",
                experiment="http-train",
                register="http-cnn",
                cam_examples=1,
            )
        )
        client = MlflowClient(uri)
        run = client.get_run(result.run_id)
        assert run.info.status == "FINISHED"
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri
        assert run.data.params["recipe"] == "seed-cnn"
        assert run.data.params["recipe.batch_size"] == "32"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
        assert steps == [1, 2]
        assert "test.study.auroc" in run.data.metrics or "test.image.accuracy" in run.data.metrics
        listed = {a.path for a in client.list_artifacts(run.info.run_id)}  # over HTTP
        assert {"history.json", "learning_curves.png", "table1.md"} <= listed, listed
        version = client.get_model_version("http-cnn", result.version)
        assert version.status == "READY"

        # on the server's disk: the store's artifacts folder, nowhere else
        run_dir = store / "artifacts" / run.info.experiment_id / run.info.run_id / "artifacts"
        assert (run_dir / "history.json").is_file()
        assert json.loads((run_dir / "history.json").read_text())
        assert any((store / "artifacts").rglob("MLmodel")), "logged model not in the store"
        assert not (tmp_path / "mlartifacts").exists() and not (REPO / "mlartifacts").exists()

        # the registered model downloads back through the server's artifact proxy
        use_tracking(uri)
        resolved = resolve_model(f"models:/http-cnn/{result.version}", cache=tmp_path / "dl")
        assert resolved.version == result.version and resolved.info.size == 32
    finally:
        assert server.stop() is not None
    assert _health(uri) is None


def _start_cli(store: Path, port: int) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "jobs.mlflow_server", "--store", str(store)]
        + ["--port", str(port), "--workers", "1"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return process, lines


def _until_export(process: subprocess.Popen[str], lines: queue.Queue[str]) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + 180
    while not any(line.startswith("export ") for line in seen):
        assert process.poll() is None, (seen, process.stderr and process.stderr.read())
        assert time.monotonic() < deadline, seen
        with contextlib.suppress(queue.Empty):
            seen.append(lines.get(timeout=1))
    return seen


def test_cli_prints_the_export_line_serves_and_stops_on_sigint(tmp_path: Path) -> None:
    store, port = tmp_path / "store", free_port()
    process, lines = _start_cli(store, port)
    try:
        seen = _until_export(process, lines)
        uri = f"http://127.0.0.1:{port}"
        assert f"export MLFLOW_TRACKING_URI={uri}\n" in seen
        assert seen[0].startswith(f"MLflow server at {uri} (store {store}")
        assert _health(uri) == 200
        assert MlflowClient(uri).get_experiment("0").artifact_location == "mlflow-artifacts:/0"
        assert (store / "mlflow.db").is_file() and (store / "artifacts").is_dir()

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        assert process.stderr is not None
        assert "MLflow server stopped" in process.stderr.read()
        assert _health(uri) is None
        with socket.socket() as s:  # the port is free again: nothing of the server is left
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        _kill_servers_of(store)


def test_cli_exits_non_zero_when_the_server_dies(tmp_path: Path) -> None:
    store, port = tmp_path / "store", free_port()
    process, lines = _start_cli(store, port)
    try:
        _until_export(process, lines)
        _kill_servers_of(store)  # the server's process group, not the CLI
        assert process.wait(timeout=60) not in (0, None)
        assert process.stderr is not None
        errors = [e for e in process.stderr.read().splitlines() if e.startswith("mura: error:")]
        assert len(errors) == 1 and "mlflow server exited unexpectedly" in errors[0], errors
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        _kill_servers_of(store)


def test_cli_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:
            result = subprocess.run(
                [sys.executable, "-m", "jobs.cli", "mlflow-server"]
                + ["--store", str(tmp_path / "store"), "--port", str(port)],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=120,
            )
        finally:
            _kill_servers_of(tmp_path / "store")
    assert result.returncode == 1, result
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("mura: error: port"), errors
    assert str(port) in errors[0] and "in use" in errors[0]
    assert result.stdout == ""


def test_unwritable_store_and_artifacts_are_refused_before_starting(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(MlflowServerError, match="MLflow store .*a-file/store: not a writable"):
        start_server(ServerConfig(store=blocker / "store", port=0))
    with pytest.raises(MlflowServerError, match="artifacts folder .*a-file/art"):
        start_server(ServerConfig(store=tmp_path / "s", artifacts=blocker / "art", port=0))
    with pytest.raises(ValueError, match="port"):
        start_server(ServerConfig(store=tmp_path / "s", port=70000))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # importing mlflow.server
def test_our_copy_of_mlflows_default_allowed_hosts_is_current() -> None:
    from mlflow.server.security_utils import get_default_allowed_hosts

    assert set(get_default_allowed_hosts()) <= set(MLFLOW_DEFAULT_ALLOWED_HOSTS)


def test_beyond_loopback_this_machines_names_are_accepted_and_others_refused(
    tmp_path: Path,
) -> None:
    server = start_server(ServerConfig(store=tmp_path / "store", host="0.0.0.0", port=0, workers=1))
    try:
        assert not server.uri.startswith("http://127.0.0.1") and server.uri.endswith(
            f":{server.port}"
        )
        assert server.local_uri == f"http://127.0.0.1:{server.port}"
        api = f"{server.local_uri}/api/2.0/mlflow"
        search = f"{api}/experiments/search?max_results=1"
        name = f"{socket.gethostname()}:{server.port}"
        # MLflow 3.x rejects unknown Host headers on the API (but not on /health)
        assert _request(search, {"Host": name})[0] == 200
        assert _request(search, {"Host": f"evil.example.com:{server.port}"})[0] == 403
        assert _request(f"{server.local_uri}/health", {"Host": "evil.example.com"})[0] == 200
        # the UI's own origin may write; a foreign one may not
        create = f"{api}/experiments/create"
        own = {"Host": name, "Origin": f"http://{name}"}
        assert _request(create, own, {"name": "from-the-ui"})[0] == 200
        foreign = {"Host": name, "Origin": "http://evil.example.com"}
        assert _request(create, foreign, {"name": "csrf"})[0] == 403
        # and clients on other nodes use the advertised URI
        assert MlflowClient(server.uri).get_experiment_by_name("from-the-ui") is not None
    finally:
        server.stop()
