"""`mura train`: a recipe on Ray Train, evaluated at study level, logged and registered in MLflow.

The recipe, top to bottom: pre-flight checks (shards, splits, body part, classes, weights
file, tracking store — all before any worker starts) → open the MLflow run and log params →
TorchTrainer over the shards (per-epoch metrics logged by a controller callback, checkpoints
kept by val loss) → rebuild the best checkpoint(s) → score train/val/test with Ray Data →
threshold on val → metrics, plots, tables, CAMs → log and register the model.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.train
from mlflow.entities import RunStatus
from ray.train.torch import TorchTrainer

from mura_core import __version__
from mura_core.checkpoints import ModelInfo, load_bundle, save_models, write_info
from mura_core.metrics import choose_threshold
from mura_core.recipes import Recipe
from mura_core.records import MURA_BODY_PARTS, BodyPart
from mura_core.shards import ShardsLayout

from ..predict import bundle_bytes, predict_splits
from ..runtime import cluster_cpus, data_context, ensure_ray
from ..shardsets import ShardStats, shard_stats
from ..tracking import (
    check_tracking,
    ensure_experiment,
    file_digest,
    git_commit,
    resolve_tracking_uri,
)
from .callback import EpochLogger
from .data import positive_weights, split_dataset
from .evaluation import SplitResult, evaluate_splits, labels_of, log_evaluation
from .loop import train_loop_per_worker

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


class TrainError(Exception):
    """A whole-run problem found before training, or a training run that failed."""


@dataclass(frozen=True)
class TrainConfig:
    """One training run; the CLI builds it from flags."""

    shards: Path
    recipe: Recipe
    weights: Path | None = None
    workers: int = 1
    gpu: bool = False
    body_part: str | None = None
    experiment: str = "mura-train"
    register: str | None = None
    tracking_uri: str | None = None
    storage: Path | None = None
    name: str | None = None
    max_failures: int = 2
    target_sensitivity: float | None = None
    seed: int = 0
    address: str | None = None
    cpus_per_worker: float | None = None
    cam_examples: int = 4
    fail_once_at_epoch: int | None = None  # test hook: a worker raises once at this epoch

    @property
    def registered_name(self) -> str:
        return self.register or f"mura-{self.recipe.model}"


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    experiment_id: str
    model_uri: str
    registered_name: str
    version: str | None
    threshold: float
    splits: dict[str, SplitResult]
    history: list[dict[str, float]]
    tracking_uri: str


def preflight(cfg: TrainConfig) -> tuple[ShardStats, str]:
    """Every whole-run check, before Ray or a worker starts: raises one-line errors."""
    shards = cfg.shards.expanduser().resolve()
    stats = shard_stats(shards)
    if cfg.body_part is not None:
        valid = {str(p) for p in (*MURA_BODY_PARTS, BodyPart.OTHER)}
        if cfg.body_part not in valid:
            raise TrainError(
                f"unknown body part {cfg.body_part!r}: one of {', '.join(sorted(valid))}"
            )
        if stats.images("train", cfg.body_part) == 0:
            present = ", ".join(stats.body_parts("train")) or "none"
            raise TrainError(
                f"--body-part {cfg.body_part} matches no training image "
                f"(training split has: {present})"
            )
    for split in SPLITS:
        if stats.images(split, cfg.body_part) == 0:
            raise TrainError(
                f"the {split} split is empty"
                + (f" for {cfg.body_part}" if cfg.body_part else "")
                + f" in {shards}: ingest with val/test fractions > 0"
            )
    train_labels = stats.labels("train", cfg.body_part)
    if train_labels.get(0, 0) == 0 or train_labels.get(1, 0) == 0:
        raise TrainError(
            f"the training split has a single class ({dict(train_labels)}): nothing to learn"
        )
    if cfg.weights is not None and not Path(cfg.weights).is_file():
        raise TrainError(f"weights file not found: {cfg.weights}")
    if cfg.workers < 1:
        raise TrainError("--workers must be >= 1")
    if cfg.target_sensitivity is not None and not 0 < cfg.target_sensitivity <= 1:
        raise TrainError("--target-sensitivity must be in (0, 1]")
    uri = resolve_tracking_uri(cfg.tracking_uri)
    check_tracking(uri)
    return stats, uri


def _params(cfg: TrainConfig, stats: ShardStats, shards: Path, name: str) -> dict[str, str]:
    params = {f"recipe.{k}": str(v) for k, v in cfg.recipe.to_dict().items()}
    params.update(
        {
            "recipe": cfg.recipe.name,
            "model": cfg.recipe.model,
            "body_part": cfg.body_part or "all",
            "workers": str(cfg.workers),
            "gpu": str(cfg.gpu),
            "imagenet_weights": "yes" if cfg.weights else "no (random init)",
            "target_sensitivity": str(cfg.target_sensitivity or "none (threshold 0.5)"),
            "seed": str(cfg.seed),
            "max_failures": str(cfg.max_failures),
            "data.manifest_digest": file_digest(ShardsLayout(shards).manifest),
            "data.shard_size": str(stats.size),
            "git_commit": git_commit(),
            "tool_version": __version__,
            "ray_train_name": name,
        }
    )
    for split in SPLITS:
        params[f"data.{split}_images"] = str(stats.images(split, cfg.body_part))
    return params


def _scaling(cfg: TrainConfig) -> ray.train.ScalingConfig:
    cpus = cluster_cpus()
    if cfg.cpus_per_worker is not None:
        per_worker = cfg.cpus_per_worker
    else:
        # leave a CPU to Ray Data's readers; fractions are fine (2 cores, 1 worker → 1 CPU)
        per_worker = max(0.5, min(4.0, (cpus - 1) / cfg.workers))
    return ray.train.ScalingConfig(
        num_workers=cfg.workers, use_gpu=cfg.gpu, resources_per_worker={"CPU": per_worker}
    )


def _datasets(shards: Path, stats: ShardStats, body_part: str | None) -> dict[str, Any]:
    """Train and val datasets; held in Ray's object store when they fit in a quarter of it.

    Streaming from Parquet re-runs the read for every epoch (seconds of start-up each time);
    a small split is read once. A large one (MURA at 320 px is ~4 GB) keeps streaming.
    """
    out = {}
    store = ray.available_resources().get("object_store_memory", 0)
    with data_context(enable_progress_bars=False):
        for split in ("train", "val"):
            ds = split_dataset(shards, split, body_part)
            if stats.images(split, body_part) * stats.size**2 < store / 4:
                ds = ds.materialize()
            # shards hold patients in archive order: visit blocks in a new order every epoch
            out[split] = ds.randomize_block_order() if split == "train" else ds
    return out


def shuffle_rows(stats: ShardStats, body_part: str | None, batch_size: int) -> int:
    """Rows in each worker's local shuffle buffer: the whole training split when it is small,
    else as many as ~256 MB of pixels hold. Batches drawn from a few blocks in archive order
    come from a handful of patients and one study type; measured on synthetic data, a
    128-row buffer left the seed CNN at chance in half the runs."""
    by_memory = (256 * 2**20) // max(stats.size**2, 1)
    return int(max(4 * batch_size, min(stats.images("train", body_part), by_memory)))


def _best_bundles(result: ray.train.Result, keep: int, into: Path) -> list[Path]:
    """The `keep` best-val-loss checkpoints, copied to local folders, best first."""
    ranked = sorted(
        (c for c in result.best_checkpoints if "val_loss" in c[1]), key=lambda c: c[1]["val_loss"]
    )
    if not ranked and result.checkpoint is not None:
        ranked = [(result.checkpoint, result.metrics or {})]
    folders = []
    for i, (checkpoint, _metrics) in enumerate(ranked[:keep]):
        folders.append(Path(checkpoint.to_directory(str(into / f"ckpt{i}"))))
    if not folders:
        raise TrainError("training reported no checkpoint")
    return folders


def run_training(cfg: TrainConfig) -> TrainResult:
    """Train, evaluate, log and register; see the module docstring for the order."""
    stats, uri = preflight(cfg)
    shards = cfg.shards.expanduser().resolve()
    recipe = cfg.recipe
    client = check_tracking(uri)
    experiment_id = ensure_experiment(client, cfg.experiment)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    name = cfg.name or f"{recipe.name}-{recipe.model}-{stamp}"
    storage = (cfg.storage or Path.cwd() / "ray_results").expanduser().resolve()
    storage.mkdir(parents=True, exist_ok=True)
    run_file = storage / name / "mlflow_run_id"
    logged_steps: tuple[int, ...] = ()
    if run_file.is_file():  # same name again: Ray Train resumes, and so does the MLflow run
        run_id = run_file.read_text().strip()
        logged_steps = tuple(int(m.step) for m in client.get_metric_history(run_id, "train_loss"))
        client.update_run(run_id, status="RUNNING")
    else:
        run = client.create_run(
            experiment_id,
            run_name=name,
            tags={
                "mura.recipe": recipe.name,
                "mura.model": recipe.model,
                "mura.body_part": cfg.body_part or "all",
            },
        )
        run_id = run.info.run_id
        for key, value in _params(cfg, stats, shards, name).items():
            client.log_param(run_id, key, value)
        run_file.parent.mkdir(parents=True, exist_ok=True)
        run_file.write_text(run_id + "\n")
    if cfg.weights is None and recipe.model != "cnn":
        print(
            f"[train] {recipe.model}: no --weights file: random initialisation "
            "(ImageNet weights are never downloaded)"
        )

    try:
        ensure_ray(cfg.address)
        loss_weights = positive_weights(stats, cfg.body_part) if recipe.weighted_loss else {}
        workers_cpus = max(1, int(cluster_cpus() // cfg.workers))
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={
                "recipe": recipe.to_dict(),
                "weights": str(cfg.weights) if cfg.weights else None,
                "loss_weights": {str(k): list(v) for k, v in loss_weights.items()},
                "seed": cfg.seed,
                "shuffle_rows": shuffle_rows(stats, cfg.body_part, recipe.batch_size),
                "torch_threads": workers_cpus,
                "fail_once_at_epoch": cfg.fail_once_at_epoch,
                "fail_marker": str(storage / name / "injected-failure")
                if cfg.fail_once_at_epoch
                else None,
            },
            scaling_config=_scaling(cfg),
            run_config=ray.train.RunConfig(
                name=name,
                storage_path=str(storage),
                failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
                checkpoint_config=ray.train.CheckpointConfig(
                    num_to_keep=max(recipe.keep_best, 1),
                    checkpoint_score_attribute="val_loss",
                    checkpoint_score_order="min",
                ),
                callbacks=[EpochLogger(uri, run_id, recipe.epochs, logged_steps)],
            ),
            datasets=_datasets(shards, stats, cfg.body_part),
            dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
        )
        result = trainer.fit()
        with tempfile.TemporaryDirectory(prefix="mura-train-") as tmp:
            out = _finish(
                cfg, recipe, result, Path(tmp), uri, client, run_id, experiment_id, shards
            )
    except BaseException:
        client.set_terminated(run_id, status=RunStatus.to_string(RunStatus.FAILED))
        raise
    client.set_terminated(run_id, status="FINISHED")
    run_file.unlink(missing_ok=True)
    return out


def _finish(
    cfg: TrainConfig,
    recipe: Recipe,
    result: ray.train.Result,
    tmp: Path,
    uri: str,
    client: Any,
    run_id: str,
    experiment_id: str,
    shards: Path,
) -> TrainResult:
    """Rebuild the best model(s), evaluate every split, log artifacts and the model."""
    folders = _best_bundles(result, recipe.keep_best, tmp)
    latest = result.checkpoint
    history_dir = Path(latest.to_directory(str(tmp / "latest"))) if latest else folders[0]
    history = json.loads((history_dir / "history.json").read_text())
    models = [load_bundle(f)[0] for f in folders]
    final = save_models(tmp / "bundle", models, ModelInfo.from_recipe(recipe))
    predictions = predict_splits(shards, SPLITS, bundle_bytes(final), body_part=cfg.body_part)
    val_labels = labels_of(predictions["val"]["label"])
    known = [i for i, v in enumerate(val_labels) if v is not None]
    threshold = choose_threshold(
        [val_labels[i] for i in known],
        [float(predictions["val"]["prob"][i]) for i in known],
        cfg.target_sensitivity,
    )
    splits = evaluate_splits(predictions, threshold, seed=cfg.seed)
    write_info(
        final,
        ModelInfo.from_recipe(
            recipe,
            threshold=threshold,
            extra={
                "run_id": run_id,
                "body_part": cfg.body_part or "all",
                "ensemble_size": len(models),
                "shard_size": shard_stats(shards).size,
            },
        ),
    )
    model_uri, version = log_evaluation(
        uri=uri,
        client=client,
        run_id=run_id,
        bundle_dir=final,
        splits=splits,
        history=history,
        predictions=predictions,
        shards=shards,
        body_part=cfg.body_part,
        registered_name=cfg.registered_name,
        cam_examples=cfg.cam_examples,
        seed=cfg.seed,
    )
    return TrainResult(
        run_id=run_id,
        experiment_id=experiment_id,
        model_uri=model_uri,
        registered_name=cfg.registered_name,
        version=version,
        threshold=threshold,
        splits=splits,
        history=history,
        tracking_uri=uri,
    )
