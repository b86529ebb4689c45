"""Training with a real local Ray and a real SQLite MLflow store.

The learning test trains the seed CNN recipe on a small synthetic archive (one body part,
bold signs, 64 px, flips only) — the CI-sized version of what `mura train` does — and checks
the study-level test AUROC, the MLflow run and the registered model.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import mlflow.pytorch
import pytest
import torch
from mlflow.tracking import MlflowClient

from mura_core.checkpoints import load_bundle
from mura_core.initial_weights import WeightsError
from mura_core.recipes import Recipe, recipe
from mura_core.shards import ShardsLayout, pixels_array, read_images
from mura_core.splits import SplitConfig
from mura_core.synth import SynthArchive, SynthConfig, synthesize
from pipelines.ingest import IngestConfig, run_ingest
from pipelines.registry.model_store import resolve_model
from pipelines.registry.tracking import TrackingError
from pipelines.train.config import TrainConfig
from pipelines.train.errors import TrainError
from pipelines.train.finish import TrainResult
from pipelines.train.prepare import preflight
from pipelines.train.run import run_training

if TYPE_CHECKING:
    from tests.pipelines.conftest import Trained

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def trained(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The session's model in this module's own copy of its store: the runs written here
    (evaluations) are seen by no other module, and theirs not here."""
    return trained.own_store(tmp_path_factory.mktemp("store"))


@pytest.mark.slow
def test_seed_cnn_learns_study_level_auroc(trained: Trained) -> None:
    test = trained.result.splits["test"].evaluation
    assert test.study.auroc is not None and test.study.auroc >= 0.9, test.study
    assert test.study.kappa is not None and test.study.kappa_ci is not None
    history = trained.result.history
    assert [h.epoch for h in history] == list(range(1, 25))
    assert history[-1].train_loss < history[0].train_loss


@pytest.mark.slow
def test_mlflow_run_has_params_metrics_artifacts(trained: Trained) -> None:
    client = MlflowClient(trained.uri)
    run = client.get_run(trained.result.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    for key in (
        "recipe",
        "model",
        "recipe.lr",
        "recipe.batch_size",
        "recipe.hflip",
        "data.manifest_digest",
        "git_commit",
        "data.train_images",
    ):
        assert key in params, key
    assert params["recipe"] == "seed-cnn" and params["recipe.batch_size"] == "32"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
    assert steps == list(range(1, 25))
    metrics = run.data.metrics
    for key in (
        "test.study.kappa",
        "test.study.auroc",
        "test.study.kappa.XR_FOREARM",
        "test.image.accuracy",
        "train.image.accuracy",
        "val.image.accuracy",
    ):
        assert key in metrics, key
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    for name in (
        "learning_curves.png",
        "roc.png",
        "confusion_test_study.png",
        "test_study_by_body_part.csv",
        "test_study_by_body_part.md",
        "table1.md",
        "history.json",
        "cam",
    ):
        assert name in artifacts, name
    cams = client.list_artifacts(run.info.run_id, "cam")
    assert len(cams) == 4 and all(c.path.endswith(".png") for c in cams)


@pytest.mark.slow
def test_registered_model_loads_back_and_scores_like_the_trained_one(trained: Trained) -> None:
    mlflow.set_tracking_uri(trained.uri)
    mlflow.set_registry_uri(trained.uri)
    version = MlflowClient(trained.uri).get_model_version("test-cnn", trained.result.version)
    assert version.tags["threshold"] == f"{trained.result.threshold}"
    uri = f"models:/test-cnn/{trained.result.version}"
    resolved = resolve_model(uri)
    ours, info = load_bundle(resolved.folder)
    theirs = mlflow.pytorch.load_model(uri)
    table = read_images(trained.shards).slice(0, 16)
    x = info.eval_preset()(torch.from_numpy(pixels_array(table.column("pixels")).copy()))
    with torch.no_grad():
        p_ours, p_theirs = torch.sigmoid(ours(x)), torch.sigmoid(theirs(x))
    assert torch.allclose(p_ours, p_theirs, atol=1e-5)
    assert resolved.version == trained.result.version and resolved.name == "test-cnn"
    assert info.threshold == pytest.approx(trained.result.threshold)


def test_preflight_refuses_bad_input_before_any_worker(
    learnable_shards: Path, tmp_path: Path
) -> None:
    good = dict(
        shards=learnable_shards,
        recipe=recipe("seed-cnn").override(size=32, epochs=1),
        tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
    )
    with pytest.raises(TrainError, match="matches no training image"):
        preflight(TrainConfig(**{**good, "body_part": "XR_WRIST"}))
    with pytest.raises(TrainError, match="XR_KNEE matches no training image"):
        preflight(TrainConfig(**{**good, "body_part": "XR_KNEE"}))
    with pytest.raises(TrackingError, match="127.0.0.1:9"):
        preflight(TrainConfig(**{**good, "tracking_uri": "http://127.0.0.1:9"}))
    with pytest.raises(WeightsError, match="weights file not found"):
        missing = recipe("seed-densenet").override(size=32, weights=str(tmp_path / "none.pth"))
        preflight(TrainConfig(**{**good, "recipe": missing}))
    old = tmp_path / "old-shards"
    old.mkdir()
    manifest = json.loads(ShardsLayout(learnable_shards).manifest.read_text())
    (old / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 0}))
    with pytest.raises(Exception, match="schema"):
        preflight(TrainConfig(**{**good, "shards": old}))


def test_preflight_refuses_empty_and_single_class_splits(
    mura_archive: SynthArchive, tmp_path: Path
) -> None:
    positives = tmp_path / "pos"
    synthesize(positives / "a", SynthConfig(studies=8, seed=1, size=64, positive_fraction=1.0))
    run_ingest(IngestConfig(source=positives / "a", out=positives / "s", size=32))
    with pytest.raises(TrainError, match="single class"):
        preflight(
            TrainConfig(
                shards=positives / "s",
                recipe=recipe("seed-cnn"),
                tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
            )
        )
    run_ingest(IngestConfig(source=mura_archive.root, out=tmp_path / "s2", size=32))
    with pytest.raises(
        TrainError,
        match="val split is empty for XR_HUMERUS|matches no training image|split is empty",
    ):
        preflight(
            TrainConfig(
                shards=tmp_path / "s2",
                recipe=recipe("seed-cnn"),
                body_part="XR_HUMERUS",
                tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
            )
        )


def test_preflight_refuses_a_target_sensitivity_on_a_single_class_val(
    mura_archive: SynthArchive, tmp_path: Path
) -> None:
    """A user's split file may leave val with positives only: choosing a threshold for a
    sensitivity then fails at the end of training, so it is refused before it starts."""
    first = tmp_path / "s1"
    run_ingest(IngestConfig(source=mura_archive.root, out=first, size=32))
    lines = ShardsLayout(first).split_file.read_text().splitlines()
    negative_val = [line for line in lines[1:] if line.endswith(",val") and "negative" in line]
    assert negative_val, "the split gives val negative studies"
    moved = [
        line.removesuffix(",val") + ",train" if line in negative_val else line for line in lines
    ]
    split_file = tmp_path / "split.csv"
    split_file.write_text("\n".join(moved) + "\n")
    second = tmp_path / "s2"
    run_ingest(
        IngestConfig(
            source=mura_archive.root,
            out=second,
            size=32,
            splits=SplitConfig(split_file=str(split_file)),
        )
    )
    cfg = TrainConfig(
        shards=second,
        recipe=recipe("seed-cnn"),
        tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
    )
    preflight(cfg)  # no target sensitivity: 0.5, said as such
    with pytest.raises(TrainError, match="needs both classes in the val split"):
        preflight(TrainConfig(**{**cfg.__dict__, "target_sensitivity": 0.9}))


@pytest.mark.slow
def test_evaluate_reproduces_the_training_metrics(trained: Trained) -> None:
    from pipelines.train.evaluate import run_evaluation

    result = run_evaluation(
        f"models:/test-cnn/{trained.result.version}",
        trained.shards,
        splits=("test",),
        tracking_uri=trained.uri,
    )
    again = result.evaluations["test"].study
    original = trained.result.splits["test"].evaluation.study
    assert again.auroc == pytest.approx(original.auroc)
    assert again.kappa == pytest.approx(original.kappa)
    assert result.threshold == pytest.approx(trained.result.threshold)


PLUMBING_SENSITIVITY = 0.5


def plumbing_recipe(*, epochs: int) -> Recipe:
    """For tests of the machinery (resume, DDP, reproducibility), not of learning: ResNet-18 at
    32 px has spread in its outputs from the first epochs (batch norm), where the seed CNN sits
    in a constant plateau for ~10 epochs — and a run whose final model has no spread is refused
    as collapsed. Its runs choose their threshold for a target sensitivity
    (PLUMBING_SENSITIVITY): a model this young often calls every image normal at 0.5."""
    return (
        recipe("seed-cnn").override(model="resnet18", size=32, epochs=epochs).with_augment("none")
    )


def _losses(result: TrainResult) -> list[float]:
    """Every epoch's train and val loss, in order."""
    return [v for h in result.history for v in (h.train_loss, h.val_loss)]


@pytest.mark.slow
def test_two_workers_train_with_ddp_and_a_seed_repeats_their_losses(
    learnable_shards: Path, tmp_path: Path
) -> None:
    """Same seed, data and worker count → the same epoch losses: Ray Data delivers blocks in
    order (preserve_order), the block order and shuffle buffers are seeded per epoch, the
    global RNG (dropout) per (seed, rank, epoch). And Ctrl-C is the process's own again after
    each run (Ray Train V2 leaves a SIGINT handler of its own behind: `session.fit`)."""
    results, ctrl_c = [], signal.getsignal(signal.SIGINT)
    for attempt in ("a", "b"):
        cfg = TrainConfig(
            shards=learnable_shards,
            recipe=plumbing_recipe(epochs=2),
            target_sensitivity=PLUMBING_SENSITIVITY,
            workers=2,
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
            storage=tmp_path / f"rr-{attempt}",
            experiment="test-ddp",
            register="ddp",
            cam_examples=0,
            seed=3,
        )
        results.append(run_training(cfg))
        assert signal.getsignal(signal.SIGINT) is ctrl_c
    first, second = results
    assert [h.epoch for h in first.history] == [1, 2]
    assert _losses(first) == pytest.approx(_losses(second), rel=1e-6, abs=1e-7)
    train_images = sum(
        1
        for s in read_images(learnable_shards, columns=["split"]).column("split").to_pylist()
        if s == "train"
    )
    assert first.splits["train"].images == train_images


@pytest.mark.slow
def test_a_collapsed_run_is_one_line_registers_nothing_and_is_tagged(
    learnable_shards: Path, tmp_path: Path
) -> None:
    """Learning rate 1.0 kills the seed CNN (its ReLUs die, every output the same)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.cli",
            "train",
            str(learnable_shards),
            *("--lr", "1.0", "--epochs", "2", "--size", "32", "--augment", "none"),
            *("--tracking-uri", uri, "--storage", str(tmp_path / "rr")),
            *("--experiment", "test-collapse", "--register", "collapse-test"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("mura: ")]
    assert len(errors) == 1 and errors[0].startswith("mura: error: training collapsed"), errors
    assert "Traceback" not in result.stderr + result.stdout
    assert "val outputs collapsed" in result.stdout  # the epoch lines say so as it happens
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("test-collapse").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["mura.collapsed"] == "true"
    assert [m.value for m in client.get_metric_history(run.info.run_id, "val_collapsed")] == [
        1.0,
        1.0,
    ]
    assert client.search_registered_models() == []
    assert client.search_logged_models(experiment_ids=[run.info.experiment_id]) == []
