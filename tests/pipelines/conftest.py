"""Shared pipeline fixtures: a real local Ray (2 CPUs) and a model trained once per session."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray

from mura_core.synth import synthesize
from pipelines.ingest import IngestConfig, run_ingest
from pipelines.runtime import start_local_ray
from pipelines.train import TrainConfig, TrainResult, run_training
from tests.pipelines import learning


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """The same local Ray the commands start (pipelines.runtime), shared by the session."""
    start_local_ray(num_cpus=2)
    yield
    ray.shutdown()


@dataclass(frozen=True)
class Trained:
    result: TrainResult
    shards: Path
    uri: str
    storage: Path


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
