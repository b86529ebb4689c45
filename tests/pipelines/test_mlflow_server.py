"""`mura mlflow-server`: a real `mlflow server` subprocess, used over HTTP like a cluster would.

Every server started here is stopped in a `finally`; the CLI tests also kill, by process
group, any server still running on their store (should the CLI itself die first).

Authentication is tested on loopback (allowed there, with a password file): no credentials and
a wrong password get 401, the admin's get 200, a `mura train` with MLFLOW_TRACKING_USERNAME /
MLFLOW_TRACKING_PASSWORD lands its run and model, and then the password (a fresh random one
per test, also as the base64 of a basic-auth header) is searched for in every file of the test
(store, databases, artifacts, server log, the run's logs), in the local Ray's session logs, in
the captured output and in the run's params and tags: it is nowhere.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import secrets
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

from mura_core.body_parts import BodyPart
from mura_core.synth import SynthConfig, synthesize
from pipelines.ingest import IngestConfig, run_ingest
from pipelines.registry.model_store import resolve_model
from pipelines.registry.server import (
    MLFLOW_DEFAULT_ALLOWED_HOSTS,
    PROBE,
    MlflowServerError,
    ServerConfig,
    basic_auth,
    start_server,
)
from pipelines.registry.tracking import TrackingError, check_tracking, tracking_client, use_tracking
from pipelines.runtime.ports import free_port

REPO = Path(__file__).resolve().parents[2]
RAY_SESSIONS = Path("/tmp/ray")


def _password() -> str:
    return "pw-" + secrets.token_hex(12)  # unique: any hit in a file is a leak of this test's


def _password_file(folder: Path, password: str, mode: int = 0o600, name: str = "pw") -> Path:
    path = folder / name
    path.write_text(password + "\n")
    path.chmod(mode)
    return path


def _leaks(password: str, *roots: Path, since: float = 0.0, skip: tuple[Path, ...] = ()) -> list:
    """Files under `roots` (changed after `since`) holding the password or its basic-auth
    header (base64 of `admin:password`)."""
    needles = (password.encode(), base64.b64encode(f"admin:{password}".encode()))
    found = []
    for root in roots:
        for path in root.rglob("*") if root.is_dir() else [root]:
            with contextlib.suppress(OSError):
                if path in skip or not path.is_file() or path.stat().st_mtime < since:
                    continue
                data = path.read_bytes()
                found += [path for needle in needles if needle in data]
    return found


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
@pytest.mark.usefixtures("ray_local")  # for the ingest; `mura train` starts a Ray of its own
def test_authenticated_train_lands_its_run_and_model_and_the_password_nowhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    began = time.time()
    synthesize(
        tmp_path / "archive",
        SynthConfig(studies=40, seed=2, size=96, sign_strength=4.0, body_parts=(BodyPart.FOREARM,)),
        workers=1,
    )
    run_ingest(IngestConfig(source=tmp_path / "archive", out=tmp_path / "shards", size=32))
    store, password = tmp_path / "store", _password()
    secret = _password_file(tmp_path, password)
    server = start_server(ServerConfig(store=store, port=0, workers=1, admin_password_file=secret))
    try:
        uri = f"http://127.0.0.1:{server.port}"
        assert server.uri == uri and server.db == store / "mlflow.db" and server.auth
        # every API call needs credentials; /health does not
        probe = server.local_uri + PROBE
        assert _request(probe, {})[0] == 401
        assert _request(probe, {"Authorization": basic_auth("admin", password + "x")})[0] == 401
        assert _request(probe, {"Authorization": basic_auth("admin", password)})[0] == 200
        assert _health(uri) == 200
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-" + password)
        with pytest.raises(TrackingError, match="refused the login .*HTTP 401") as refused:
            check_tracking(uri)
        assert password not in str(refused.value)

        trained = _mura_train(tmp_path, uri, password)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        client = tracking_client(uri)  # not a registry another test left set
        (run,) = client.search_runs([client.get_experiment_by_name("http-train").experiment_id])
        assert run.info.run_id in trained.stdout
        assert run.info.status == "FINISHED"
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri
        assert run.data.params["recipe"] == "seed-cnn"
        assert run.data.params["recipe.batch_size"] == "32"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
        assert steps == [1, 2]  # from the Train controller: it signed in too
        assert "test.study.auroc" in run.data.metrics or "test.image.accuracy" in run.data.metrics
        listed = {a.path for a in client.list_artifacts(run.info.run_id)}  # over HTTP
        assert {"history.json", "learning_curves.png", "table1.md"} <= listed, listed
        versions = client.search_model_versions("name='http-cnn'")
        assert len(versions) == 1, trained.stdout[-3000:] + trained.stderr[-3000:]
        (version,) = versions
        assert version.status == "READY" and version.run_id == run.info.run_id

        # on the server's disk: the store's artifacts folder, nowhere else
        run_dir = store / "artifacts" / run.info.experiment_id / run.info.run_id / "artifacts"
        assert json.loads((run_dir / "history.json").read_text())
        assert any((store / "artifacts").rglob("MLmodel")), "logged model not in the store"
        assert not (tmp_path / "mlartifacts").exists() and not (REPO / "mlartifacts").exists()

        # the registered model downloads back through the server's artifact proxy
        use_tracking(uri)
        resolved = resolve_model(f"models:/http-cnn/{version.version}", cache=tmp_path / "dl")
        assert resolved.version == version.version and resolved.info.size == 32

        # the password: in no param or tag, no output, no file, no Ray log
        values = [*run.data.params.values(), *run.data.tags.values(), *version.tags.values()]
        assert not [v for v in values if password in v]
        assert password not in trained.stdout + trained.stderr
        for private in (store / "mlflow.db", store / "basic_auth.db", store / "basic_auth.ini"):
            assert private.stat().st_mode & 0o077 == 0, private
    finally:
        assert server.stop() is not None
    assert _health(uri) is None
    assert not _leaks(password, tmp_path, skip=(secret,))
    assert not _leaks(password, RAY_SESSIONS, since=began)

    # a password file changed since the admin user was made no longer matches: one line
    other = _password_file(tmp_path, _password(), name="other")
    with pytest.raises(MlflowServerError, match="has another password than") as mismatch:
        start_server(ServerConfig(store=store, port=0, workers=1, admin_password_file=other))
    assert "\n" not in str(mismatch.value) and password not in str(mismatch.value)


def _mura_train(tmp_path: Path, uri: str, password: str) -> subprocess.CompletedProcess[str]:
    """`mura train` as a user runs it, signed in through MLflow's environment variables."""
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": password,
    }
    done = subprocess.run(
        [sys.executable, "-m", "jobs.train", str(tmp_path / "shards"), "--recipe", "seed-cnn"]
        # ResNet-18 has spread from its first epoch, and the threshold chosen for a target
        # sensitivity is not one-sided: a plumbing run that is never refused as collapsed
        # (the seed CNN at 32 px sat on its plateau: one-sided, on 6 val images)
        + ["--model", "resnet18", "--target-sensitivity", "0.5"]
        + ["--size", "32", "--batch-size", "32", "--epochs", "2", "--augment", "none"]
        + ["--storage", str(tmp_path / "ray_results"), "--experiment", "http-train"]
        + ["--register", "http-cnn"],
        cwd=tmp_path,  # whatever it writes lands where the leak search looks
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _start_cli(
    store: Path, port: int, *extra: str
) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "jobs.mlflow_server", "--store", str(store)]
        + ["--port", str(port), "--workers", "1", *extra],
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


def test_cli_with_auth_says_how_to_sign_in_and_exits_non_zero_when_the_server_dies(
    tmp_path: Path,
) -> None:
    store, port, password = tmp_path / "store", free_port(), _password()
    secret = _password_file(tmp_path, password)
    process, lines = _start_cli(store, port, "--admin-password-file", str(secret))
    try:
        seen = _until_export(process, lines)
        seen.append(lines.get(timeout=10))
        assert seen[-2:] == [
            f"export MLFLOW_TRACKING_URI=http://127.0.0.1:{port}\n",
            "export MLFLOW_TRACKING_USERNAME=admin\n",
        ]
        assert _request(f"http://127.0.0.1:{port}{PROBE}", {})[0] == 401
        _kill_servers_of(store)  # the server's process group, not the CLI
        assert process.wait(timeout=60) not in (0, None)
        assert process.stderr is not None
        stderr = process.stderr.read()
        errors = [e for e in stderr.splitlines() if e.startswith("mura: error:")]
        assert len(errors) == 1 and "mlflow server exited unexpectedly" in errors[0], errors
        assert f"with the password in {secret}" in stderr
        assert password not in stderr + "".join(seen)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        _kill_servers_of(store)


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobs.mlflow_server", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_beyond_loopback_without_a_password_file_is_refused_before_starting(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    result = _cli("--host", "0.0.0.0", "--store", str(store), "--port", str(free_port()))
    assert result.returncode == 1, result
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("mura: error: --host 0.0.0.0"), errors
    assert "--admin-password-file" in errors[0] and "--insecure" in errors[0]
    assert result.stdout == "" and not store.exists()  # nothing created, nothing started


def test_a_password_file_open_to_others_is_refused(tmp_path: Path) -> None:
    password = _password()
    secret = _password_file(tmp_path, password, mode=0o644)
    store = tmp_path / "store"
    result = _cli("--store", str(store), "--admin-password-file", str(secret), "--port", "0")
    assert result.returncode == 1, result
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("mura: error: --admin-password-file"), errors
    assert "mode 644" in errors[0] and "chmod 600" in errors[0]
    assert password not in result.stderr + result.stdout and not store.exists()


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("", "expected one line"),
        ("short\n", "at least 12 characters"),
        ("first-line-is-long\nsecond-line-too\n", "expected one line"),
    ],
)
def test_password_files_that_cannot_be_the_admins_are_refused(
    tmp_path: Path, content: str, error: str
) -> None:
    secret = tmp_path / "pw"
    secret.write_text(content)
    secret.chmod(0o600)
    with pytest.raises(MlflowServerError, match=error):
        start_server(ServerConfig(store=tmp_path / "s", port=0, admin_password_file=secret))
    assert not (tmp_path / "s").exists()


def test_a_missing_password_file_and_a_bad_admin_name_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MlflowServerError, match="nope: No such file"):
        start_server(ServerConfig(store=tmp_path / "s", admin_password_file=tmp_path / "nope"))
    secret = _password_file(tmp_path, _password())
    with pytest.raises(ValueError, match="admin username 'a:b'"):
        start_server(
            ServerConfig(store=tmp_path / "s", admin_password_file=secret, admin_username="a:b")
        )
    assert not (tmp_path / "s").exists()


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
    server = start_server(
        ServerConfig(store=tmp_path / "store", host="0.0.0.0", port=0, workers=1, insecure=True)
    )
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
