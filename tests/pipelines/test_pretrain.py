"""`mura pretrain` with a real local Ray and a real SQLite MLflow store, then `mura train
--weights models:/NAME/1` (the CLI, as a user runs it) starting from the registered encoder."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from mura_core.checkpoints import load_bundle
from mura_core.initial_weights import WeightsError
from mura_core.shards import read_images
from mura_core.ssl import ENCODER_FILE, is_encoder
from pipelines.pretrain.run import PretrainConfig, PretrainError, preflight, run_pretraining
from pipelines.pretrain.weights import resolve_initial_weights
from pipelines.registry.model_store import ModelSpecError, resolve_model, scoring_model


def _mura(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_pretrained_encoder_is_registered_and_mura_train_starts_from_it(
    learnable_shards: Path, tmp_path: Path
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_pretraining(
        PretrainConfig(
            shards=learnable_shards,
            size=32,
            epochs=1,
            batch_size=64,
            projector_dim=256,
            tracking_uri=uri,
            storage=tmp_path / "rr",
            experiment="test-pretrain",
            register="test-encoder",
        )
    )
    # the train and val images, never test's; labels unused
    splits = read_images(learnable_shards, columns=["split"]).column("split").to_pylist()
    assert result.images == sum(s in ("train", "val") for s in splits) < len(splits)
    assert [h.epoch for h in result.history] == [1]
    assert math.isfinite(result.history[0].loss) and result.history[0].steps >= 1
    assert result.registered_name == "test-encoder" and result.version == "1"

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["mura.kind"] == "encoder"
    assert run.data.params["method"] == "vicreg" and run.data.params["splits"] == "train+val"
    assert run.data.params["data.images"] == str(result.images)
    for key in ("loss", "invariance", "variance", "covariance", "embedding_std"):
        assert [m.step for m in client.get_metric_history(result.run_id, key)] == [1], key
    version = client.get_model_version("test-encoder", "1")
    assert version.tags["kind"] == "encoder" and version.run_id == result.run_id

    # the registered bundle says it is an encoder and loads; encoder.pt travels in it
    resolved = resolve_model("models:/test-encoder/1", cache=tmp_path / "resolved")
    assert is_encoder(resolved.info.extra) and resolved.info.extra.method == "vicreg"
    assert (resolved.folder / ENCODER_FILE).is_file() and result.encoder_file.is_file()
    load_bundle(resolved.folder)
    with pytest.raises(ModelSpecError, match="is a pretrained encoder .* not a classifier"):
        scoring_model(str(resolved.folder))  # evaluate and screen refuse it in one line
    local = torch.load(result.encoder_file, weights_only=True)
    shipped = torch.load(resolved.folder / ENCODER_FILE, weights_only=True)
    assert all(torch.equal(local[k], shipped[k]) for k in local)

    # resolved on the driver like a FILE: the same tensors; the architecture checked
    weights = resolve_initial_weights("models:/test-encoder/1", "resnet18", uri)
    assert weights.label.startswith("models:/test-encoder/1 (encoder resnet18, vicreg")
    assert weights.state is not None
    assert torch.equal(weights.state["conv1.weight"], local["conv1.weight"])
    from_folder = resolve_initial_weights(str(result.bundle), "resnet18", uri)
    assert from_folder.state is not None and set(from_folder.state) == set(weights.state)
    client.set_registered_model_alias("test-encoder", "base", "1")
    by_alias = resolve_initial_weights("models:/test-encoder@base", "resnet18", uri)
    assert "test-encoder v1" in by_alias.label and by_alias.state is not None
    with pytest.raises(WeightsError, match="is a resnet18 encoder, this run trains resnet34"):
        resolve_initial_weights("models:/test-encoder/1", "resnet34", uri)

    # `mura train --weights models:/NAME/1`: loads it and says so
    trained = _mura(
        "train",
        str(learnable_shards),
        *("--recipe", "seed-densenet", "--model", "resnet18", "--size", "32"),
        *("--epochs", "1", "--batch-size", "32", "--augment", "flips"),
        *("--weights", "models:/test-encoder/1"),
        *("--tracking-uri", uri, "--storage", str(tmp_path / "rr")),
        *("--experiment", "test-from-encoder", "--register", "test-from-encoder"),
    )
    said = [
        line
        for line in trained.stdout.splitlines()
        if line.startswith("[train] resnet18 weights: models:/test-encoder/1 (encoder resnet18")
    ]
    assert len(said) == 1 and f"MLflow run {result.run_id}" in said[0], trained.stdout[-3000:]
    assert "Traceback" not in trained.stderr + trained.stdout
    (train_run,) = client.search_runs(
        [client.get_experiment_by_name("test-from-encoder").experiment_id]
    )
    assert train_run.data.params["weights"].startswith("models:/test-encoder/1 (encoder")
    # one epoch of a fresh head may end collapsed (refused, one line); either way it started
    # from the encoder, which is what this test is about
    errors = [line for line in trained.stderr.splitlines() if line.startswith("mura: ")]
    assert trained.returncode == 0 or (
        trained.returncode == 1
        and len(errors) == 1
        and errors[0].startswith("mura: error: training collapsed")
    ), trained.stderr[-3000:]


# ray_local first: the session's shards are ingested on the fixture's Ray, not on one of
# their own that the fixture would then find running
@pytest.mark.usefixtures("ray_local")
def test_weights_from_a_missing_registered_model_is_one_line(
    learnable_shards: Path, tmp_path: Path
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = _mura(
        "train",
        str(learnable_shards),
        *("--recipe", "seed-densenet", "--model", "resnet18", "--size", "32", "--epochs", "1"),
        *("--weights", "models:/missing/1", "--tracking-uri", uri),
        *("--storage", str(tmp_path / "rr")),
        timeout=300,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("mura: ")]
    assert len(errors) == 1 and errors[0].startswith(
        "mura: error: --weights models:/missing/1: model models:/missing/1 does not resolve"
    ), result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "rr").exists()  # refused before any work


def test_an_archive_or_pacs_instead_of_shards_is_one_line_saying_ingest(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    (archive / "XR_WRIST").mkdir(parents=True)
    (archive / "XR_WRIST" / "image1.png").write_bytes(b"\x89PNG")
    with pytest.raises(PretrainError, match=r"run `mura ingest .*archive --out SHARDS` first"):
        preflight(PretrainConfig(shards=archive))
    result = _mura("pretrain", "dicomweb+http://127.0.0.1:1/dicom-web", timeout=120)
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "mura: error: dicomweb+http://127.0.0.1:1/dicom-web is a PACS: `mura ingest` it"
        )
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"batch_size": 1}, "--batch-size must be >= 2"),
        ({"batch_size": 100_000}, "fewer than one batch per worker"),
        ({"model": "cnn"}, "seed CNN takes no pretrained weights"),
        ({"model": "no-such-net"}, "unknown model"),
        ({"size": 8}, "--size must be within 32"),
    ],
)
@pytest.mark.usefixtures("ray_local")
def test_preflight_refuses_in_one_line(
    learnable_shards: Path, tmp_path: Path, change: dict, message: str
) -> None:
    cfg = PretrainConfig(
        shards=learnable_shards, tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", **change
    )
    with pytest.raises(Exception, match=message) as info:
        preflight(cfg)
    assert "\n" not in str(info.value)


def test_gathered_loss_on_two_workers_is_the_global_batchs(tmp_path: Path) -> None:
    """Each worker's loss is the loss of the whole batch, and its embeddings' gradient is
    world × the global one (DDP's averaging then gives the global batch's step), as VICReg's
    FullGatherLayer does."""
    import torch.multiprocessing as mp

    from mura_core.ssl import vicreg_loss
    from tests.pipelines.ssl_ranks import embeddings, gathered_grad

    init, out = (tmp_path / "rendezvous").as_uri(), str(tmp_path / "rank")
    mp.spawn(gathered_grad, args=(2, init, out), nprocs=2, join=True)
    z1, z2 = (z.clone().requires_grad_(True) for z in embeddings())
    whole = vicreg_loss(z1, z2)
    whole.loss.backward()
    for rank in (0, 1):
        got = torch.load(f"{out}{rank}", weights_only=True)
        assert torch.allclose(got["loss"], whole.loss.detach(), atol=1e-5)
        mine = slice(rank * 8, (rank + 1) * 8)
        for grad, full in zip(got["grads"], (z1.grad, z2.grad), strict=True):
            assert torch.allclose(grad, 2 * full[mine], atol=1e-5)
