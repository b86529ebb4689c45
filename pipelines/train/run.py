"""`mura train`: a recipe on Ray Train, evaluated at study level, logged and registered in MLflow.

The recipe, top to bottom: pre-flight checks (shards, splits, body part, classes, tracking
store, then the initial weights: ImageNet from the torch hub cache or downloaded, a file, or
none — found, loaded once and checked; all before any worker starts, and the tensors go to
the workers through Ray's object store) → open the MLflow run and log its tags and params
(`mura_core.run_contract.TrainRunParams`; the run's place, resumption and end are
`pipelines.train.session`'s, shared with `mura pretrain`) → TorchTrainer over the shards
(reproducible data order; per-epoch `EpochReport`s logged by a controller callback and
shown as a progress bar per epoch; checkpoints kept by val loss; early stopping when the
recipe asks) → rebuild the best checkpoint(s) → score train/val/test with Ray Data →
threshold on val → metrics, plots, tables, CAMs → unless the model has collapsed (outputs
without spread: the run fails, tagged `mura.collapsed=true`, nothing registered), log and
register the model.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray.data import ExecutionOptions, RandomSeedConfig
from ray.train.torch import TorchTrainer

from mura_core import __version__
from mura_core.checkpoints import load_bundle, read_history, save_models, write_info
from mura_core.initial_weights import InitialWeights
from mura_core.model_info import ModelInfo, ModelOrigin
from mura_core.recipes import Recipe
from mura_core.run_contract import EpochReport, TrainRunParams
from mura_core.shards import ShardsLayout
from mura_core.studies import Predictions
from pipelines.pretrain.weights import resolve_initial_weights
from pipelines.registry.tracking import (
    check_tracking,
    file_digest,
    git_commit,
    resolve_tracking_uri,
)
from pipelines.runtime.cluster import cluster_cpus, data_context, ensure_ray
from pipelines.runtime.console import console
from pipelines.runtime.progress import progress_feed
from pipelines.shards.predict import bundle_bytes, predict_splits
from pipelines.shards.shardsets import ShardStats, shard_stats
from pipelines.train.callback import EpochLogger
from pipelines.train.data import positive_weights, split_dataset
from pipelines.train.errors import TrainCollapsed, TrainError
from pipelines.train.evaluation import (
    SplitResult,
    evaluate_splits,
    log_calibration,
    log_evaluation,
    log_model,
    log_reference,
    validation_reference,
)
from pipelines.train.loop import LoopConfig, train_loop_per_worker
from pipelines.train.operating import calibrated, operating_point
from pipelines.train.session import (
    OpenRun,
    RunPlace,
    finished,
    new_run,
    resumed_run,
    run_config,
    scaling,
)

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class TrainConfig:
    """One training run; the CLI builds it from flags."""

    shards: Path
    recipe: Recipe  # its `weights` field: "imagenet", "none" or a FILE
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
    calibrate: bool = False  # fit temperature scaling on val; the model carries it
    per_part_threshold: bool = False  # one threshold per body part for target_sensitivity
    seed: int = 0
    address: str | None = None
    cpus_per_worker: float | None = None
    cam_examples: int = 4

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
    history: list[EpochReport]
    tracking_uri: str
    weights: str  # the initial weights, as logged: "none (random init)", "imagenet (...)", ...


@dataclass(frozen=True)
class Checked:
    """What the pre-flight checks found: shard counts, the tracking URI, initial weights."""

    stats: ShardStats
    uri: str
    weights: InitialWeights


def preflight(cfg: TrainConfig) -> Checked:
    """Every whole-run check, before Ray or a worker starts: raises one-line errors."""
    shards = cfg.shards.expanduser().resolve()
    stats = shard_stats(shards)
    if cfg.body_part is not None and stats.images("train", cfg.body_part) == 0:
        present = ", ".join(stats.body_parts("train")) or "none"
        raise TrainError(
            f"--body-part {cfg.body_part} matches no training image (training split has: {present})"
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
    if cfg.workers < 1:
        raise TrainError("--workers must be >= 1")
    if cfg.target_sensitivity is not None and not 0 < cfg.target_sensitivity <= 1:
        raise TrainError("--target-sensitivity must be in (0, 1]")
    val_labels = stats.labels("val", cfg.body_part)
    if cfg.target_sensitivity is not None and min(val_labels.get(0, 0), val_labels.get(1, 0)) == 0:
        raise TrainError(
            f"--target-sensitivity needs both classes in the val split ({dict(val_labels)}): "
            "ingest with a larger --val-fraction or give a --split-file"
        )
    if cfg.per_part_threshold and cfg.target_sensitivity is None:
        raise TrainError(
            "--per-part-threshold needs --target-sensitivity: the sensitivity "
            "each body part's threshold is chosen for"
        )
    uri = resolve_tracking_uri(cfg.tracking_uri)
    check_tracking(uri)
    # last: it may download ~60 MB, not worth it before a cheap check fails
    weights = resolve_initial_weights(cfg.recipe.weights, cfg.recipe.model, uri)
    return Checked(stats, uri, weights)


def _params(
    cfg: TrainConfig, stats: ShardStats, shards: Path, name: str, weights: str
) -> TrainRunParams:
    return TrainRunParams(
        recipe=cfg.recipe,
        body_part=cfg.body_part,
        workers=cfg.workers,
        gpu=cfg.gpu,
        weights=weights,
        target_sensitivity=cfg.target_sensitivity,
        seed=cfg.seed,
        max_failures=cfg.max_failures,
        manifest_digest=file_digest(ShardsLayout(shards).manifest),
        shard_size=stats.size,
        images={split: stats.images(split, cfg.body_part) for split in SPLITS},
        git_commit=git_commit(),
        tool_version=__version__,
        ray_train_name=name,
    )


def _datasets(
    shards: Path, stats: ShardStats, body_part: str | None, seed: int, *, ordered: bool = True
) -> dict:
    """Train and val datasets; held in Ray's object store when they fit in a quarter of it.

    Streaming from Parquet re-runs the read for every epoch (seconds of start-up each time);
    a small split is read once. A large one (MURA at 320 px is ~4 GB) keeps streaming.
    Reproducible: blocks come in order (`preserve_order`), the training blocks in a new
    seeded order every epoch (`RandomSeedConfig(seed, reseed_after_execution=True)`), and the
    workers' shuffle buffers are seeded by (seed, epoch) — so the same seed, data and number
    of workers give the same batches, run after run (`ordered=False` only to measure what
    that costs: bench/train.py).
    """
    out = {}
    store = ray.available_resources().get("object_store_memory", 0)
    with data_context(enable_progress_bars=False, preserve_order=ordered):
        for split in ("train", "val"):
            ds = split_dataset(shards, split, body_part)
            if stats.images(split, body_part) * stats.size**2 < store / 4:
                ds = ds.materialize()
            if split == "train":  # shards hold patients in archive order: shuffle the blocks
                ds = ds.randomize_block_order(
                    seed=RandomSeedConfig(seed=seed, reseed_after_execution=True)
                    if ordered
                    else None
                )
            out[split] = ds
    return out


def _data_config() -> ray.train.DataConfig:
    """Split the training set over the workers, in order (the split is then deterministic:
    Ray's splitter deals blocks to the worker with the fewest rows so far)."""
    return ray.train.DataConfig(
        datasets_to_split=["train"], execution_options=ExecutionOptions(preserve_order=True)
    )


def shuffle_rows(stats: ShardStats, body_part: str | None, batch_size: int) -> int:
    """Rows in each worker's local shuffle buffer: the whole training split when it is small,
    else as many as ~256 MB of pixels hold. Batches drawn from a few blocks in archive order
    come from a handful of patients and one study type; measured on synthetic data, a
    128-row buffer left the seed CNN at chance in half the runs."""
    by_memory = (256 * 2**20) // max(stats.size**2, 1)
    return int(max(4 * batch_size, min(stats.images("train", body_part), by_memory)))


def _best_bundles(result: ray.train.Result, keep: int, into: Path) -> list[Path]:
    """The `keep` best-val-loss checkpoints, copied to local folders, best first."""
    reported = [(c, EpochReport.from_dict(m)) for c, m in result.best_checkpoints]
    ranked = sorted(
        ((c, r) for c, r in reported if r.val_loss is not None), key=lambda c: c[1].val_loss
    )
    if not ranked and result.checkpoint is not None:
        ranked = [(result.checkpoint, EpochReport.from_dict(result.metrics or {}))]
    folders = []
    for i, (checkpoint, _report) in enumerate(ranked[:keep]):
        folders.append(Path(checkpoint.to_directory(str(into / f"ckpt{i}"))))
    if not folders:
        raise TrainError("training reported no checkpoint")
    return folders


def _open_run(cfg: TrainConfig, checked: Checked, client: Any, place: RunPlace) -> OpenRun:
    """The MLflow run: a new one with its params, or — same `--name` again, so Ray Train
    resumes — the earlier one, with the epochs it already logged."""
    found = resumed_run(client, place, EpochReport.STEP_METRIC)
    if found is not None:
        return found
    shards = cfg.shards.expanduser().resolve()
    params = _params(cfg, checked.stats, shards, place.name, checked.weights.label)
    return new_run(client, place, cfg.experiment, params.to_tags(), params.to_params())


def _trainer(
    cfg: TrainConfig, checked: Checked, place: RunPlace, run: OpenRun, sink: Any
) -> TorchTrainer:
    """The TorchTrainer for this run (Ray started): loop config, scaling, checkpoints, data."""
    recipe, stats, shards = cfg.recipe, checked.stats, cfg.shards.expanduser().resolve()
    loop = LoopConfig(
        recipe=recipe,
        seed=cfg.seed,
        # the tensors, not a path: workers need not see the driver's disk
        weights=None if checked.weights.state is None else ray.put(checked.weights.state),
        loss_weights=positive_weights(stats, cfg.body_part) if recipe.weighted_loss else None,
        shuffle_rows=shuffle_rows(stats, cfg.body_part, recipe.batch_size),
        torch_threads=max(1, int(cluster_cpus() // cfg.workers)),
        train_images=stats.images("train", cfg.body_part),
        progress=sink,
    )
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"loop": loop},
        scaling_config=scaling(cfg),
        run_config=run_config(
            cfg,
            place,
            ray.train.CheckpointConfig(
                num_to_keep=max(recipe.keep_best, 1),
                checkpoint_score_attribute=EpochReport.CHECKPOINT_SCORE,
                checkpoint_score_order="min",
            ),
            EpochLogger(checked.uri, run.run_id, run.logged, recipe.epochs, sink),
        ),
        datasets=_datasets(shards, stats, cfg.body_part, cfg.seed),
        dataset_config=_data_config(),
    )


def run_training(cfg: TrainConfig) -> TrainResult:
    """Train, evaluate, log and register; see the module docstring for the order."""
    checked = preflight(cfg)
    client = check_tracking(checked.uri)
    place = RunPlace.of(cfg, f"{cfg.recipe.name}-{cfg.recipe.model}", "train")
    run = _open_run(cfg, checked, client, place)
    console.print(f"[train] {cfg.recipe.model} weights: {checked.weights.label}")
    # a collapsed model is final: the same --name starts a new run rather than resume it
    with finished(client, run.run_id, place, forget_on=(TrainCollapsed,)):
        ensure_ray(cfg.address)
        with progress_feed(summary=False) as sink:
            result = _trainer(cfg, checked, place, run, sink).fit()
        _say_how_it_ended(cfg.recipe, result)
        with tempfile.TemporaryDirectory(prefix="mura-train-") as tmp:
            return _finish(cfg, result, Path(tmp), checked, client, run.run_id)


def _say_how_it_ended(recipe: Recipe, result: ray.train.Result) -> None:
    epoch = EpochReport.from_dict(result.metrics or {}).epoch
    if recipe.early_stop and epoch < recipe.epochs:
        console.print(
            f"[train] stopped early after epoch {epoch}: val loss did not improve for "
            f"{recipe.early_stop} epochs"
        )


def _final_bundle(
    cfg: TrainConfig, result: ray.train.Result, tmp: Path
) -> tuple[Path, int, list[EpochReport]]:
    """The best checkpoint(s) as one bundle (an ensemble when the recipe keeps several),
    how many models it holds, and the run's per-epoch history."""
    folders = _best_bundles(result, cfg.recipe.keep_best, tmp)
    latest = result.checkpoint
    history_dir = Path(latest.to_directory(str(tmp / "latest"))) if latest else folders[0]
    models = [load_bundle(f)[0] for f in folders]
    final = save_models(tmp / "bundle", models, ModelInfo.from_recipe(cfg.recipe))
    return final, len(models), read_history(history_dir)


def _decide(
    cfg: TrainConfig, predictions: dict[str, Predictions], client: Any, run_id: str
) -> tuple[dict[str, Predictions], ModelInfo]:
    """How the model decides, chosen on val: the temperature (`--calibrate`; the splits'
    probabilities as the calibrated model gives them), the threshold(s); a collapsed model
    raises (`operating_point`)."""
    temperature = 1.0
    if cfg.calibrate:
        scaled, temperature = calibrated(predictions)
        log_calibration(client, run_id, predictions, temperature)
        predictions = scaled
    threshold, part_thresholds = operating_point(
        predictions["val"],
        cfg.target_sensitivity,
        cfg.per_part_threshold,
        cfg.recipe.weighted_loss,
        client,
        run_id,
    )
    info = ModelInfo.from_recipe(
        cfg.recipe,
        threshold=threshold,
        temperature=temperature,
        part_thresholds=part_thresholds or None,
    )
    return predictions, info


def _finish(
    cfg: TrainConfig,
    result: ray.train.Result,
    tmp: Path,
    checked: Checked,
    client: Any,
    run_id: str,
) -> TrainResult:
    """Rebuild the best model(s), evaluate every split, log artifacts; unless the model has
    collapsed, log and register it."""
    shards = cfg.shards.expanduser().resolve()
    final, members, history = _final_bundle(cfg, result, tmp)
    predictions = predict_splits(shards, SPLITS, bundle_bytes(final), body_part=cfg.body_part)
    predictions, info = _decide(cfg, predictions, client, run_id)
    info = replace(
        info,
        extra=ModelOrigin(
            run_id=run_id,
            body_part=cfg.body_part or "all",
            ensemble_size=members,
            shard_size=checked.stats.size,
            weights=checked.weights.label,
        ),
    )
    threshold, part_thresholds = info.threshold, info.part_thresholds or {}
    splits = evaluate_splits(predictions, threshold, seed=cfg.seed, part_thresholds=part_thresholds)
    write_info(final, info)
    reference = validation_reference(shards, predictions["val"], info, cfg.body_part)
    log_reference(client, run_id, final, reference)
    log_evaluation(
        client=client,
        run_id=run_id,
        bundle_dir=final,
        splits=splits,
        history=history,
        predictions=predictions,
        shards=shards,
        cam_examples=cfg.cam_examples,
    )
    model_uri, version = log_model(
        uri=checked.uri,
        run_id=run_id,
        bundle_dir=final,
        registered_name=cfg.registered_name,
        body_part=cfg.body_part,
        seed=cfg.seed,
    )
    return TrainResult(
        run_id=run_id,
        experiment_id=client.get_run(run_id).info.experiment_id,
        model_uri=model_uri,
        registered_name=cfg.registered_name,
        version=version,
        threshold=threshold,
        splits=splits,
        history=history,
        tracking_uri=checked.uri,
        weights=checked.weights.label,
    )
