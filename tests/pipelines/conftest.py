"""Shared pipeline fixtures: a real local Ray (2 CPUs), a model trained once per session, and
a FHIR server over TLS that this process trusts (`fhir_tls`).

The session model's MLflow store is read by many modules; a module that writes runs (screens,
nights, feedback, evaluations) takes `trained.own_store(folder)`: the same model in a private
copy of the store, so nothing one module logs is seen by another.
"""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray

from mura_core.synth import synthesize
from pipelines.ingest import IngestConfig, run_ingest
from pipelines.registry.tracking import sqlite_path
from pipelines.runtime.cluster import start_local_ray
from pipelines.train.config import TrainConfig
from pipelines.train.finish import TrainResult
from pipelines.train.run import run_training
from tests.pipelines import learning
from tests.pipelines.worklist import FHIR_TOKEN, FhirReceiver, self_signed


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """The same local Ray the commands start (pipelines.runtime.cluster), shared by the session."""
    start_local_ray(num_cpus=2)
    yield
    ray.shutdown()


@dataclass(frozen=True)
class Trained:
    result: TrainResult
    shards: Path
    uri: str
    storage: Path

    def own_store(self, into: Path) -> Trained:
        """The same model, its MLflow store copied into `into` (what a test logs stays there)."""
        return dataclasses.replace(self, uri=copy_store(self.uri, into))


def copy_store(uri: str, into: Path) -> str:
    """A private copy of a SQLite store and its mlartifacts, paths inside rewritten."""
    db = sqlite_path(uri)
    assert db is not None
    into.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db) as src, sqlite3.connect(into / db.name) as dst:
        src.backup(dst)
    if (db.parent / "mlartifacts").is_dir():
        shutil.copytree(db.parent / "mlartifacts", into / "mlartifacts")
    old, new = f"{db.parent}/", f"{into}/"
    with sqlite3.connect(into / db.name) as con:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
        for table in tables:
            for column in con.execute(f"pragma table_info('{table}')").fetchall():
                name = column[1]
                con.execute(
                    f'update "{table}" set "{name}" = replace("{name}", ?, ?) '
                    f'where typeof("{name}") = \'text\' and instr("{name}", ?) > 0',
                    (old, new, old),
                )
    return f"sqlite:///{into / db.name}"


@pytest.fixture(scope="session")
def learnable_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Forearm studies with bold signs, ingested at 64 px: learnable in a CI budget."""
    root = tmp_path_factory.mktemp("learnable")
    synthesize(root / "archive", learning.ARCHIVE)
    run_ingest(IngestConfig(source=root / "archive", out=root / "shards", size=learning.SHARD_SIZE))
    return root / "shards"


@pytest.fixture(scope="session")
def trained(
    ray_local: None, learnable_shards: Path, tmp_path_factory: pytest.TempPathFactory
) -> Trained:
    """The seed CNN trained once per session (~2.5 min), registered as test-cnn v1."""
    work = tmp_path_factory.mktemp("train")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    cfg = TrainConfig(
        shards=learnable_shards,
        recipe=learning.ci_recipe(),
        tracking_uri=uri,
        storage=work / "ray_results",
        experiment="test-train",
        register="test-cnn",
    )
    return Trained(run_training(cfg), learnable_shards, uri, work / "ray_results")


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    """The FHIR bearer token (`FHIR_TOKEN`) in a file only its owner reads, as
    `--notify-token` wants it."""
    path = tmp_path / "fhir.token"
    path.write_text(FHIR_TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def fhir_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FhirReceiver]:
    """A FHIR base URL over TLS (`tests.pipelines.worklist`) whose self-signed certificate
    this process trusts (REQUESTS_CA_BUNDLE, as a site with a private CA sets it)."""
    pytest.importorskip("cryptography")
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    server = FhirReceiver(tls=(cert, key))
    yield server
    server.close()
