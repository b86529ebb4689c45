"""`mura train`: a recipe on Ray Train, evaluated at study level, logged and registered in MLflow.

The recipe, top to bottom: pre-flight checks (`prepare.preflight`: shards, splits, body part,
classes, tracking store, then the initial weights: ImageNet from the torch hub cache or
downloaded, a file, or none — found, loaded once and checked; all before any worker starts,
and the tensors go to the workers through Ray's object store) → open the MLflow run and log
its tags and params (`mura_core.run_contract.TrainRunParams`; the run's place, resumption
and end are `pipelines.train.session`'s, shared with `mura pretrain`) → TorchTrainer over
the shards (`data`: reproducible data order; per-epoch `EpochReport`s logged by a controller
callback and shown as a progress bar per epoch; checkpoints kept by val loss; early stopping
when the recipe asks) → `finish`: rebuild the best checkpoint(s) → score train/val/test with
Ray Data → threshold on val → metrics, plots, tables, CAMs → unless the model has collapsed
(outputs without spread: the run fails, tagged `mura.collapsed=true`, nothing registered),
log and register the model.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray.train.torch import TorchTrainer

from mura_core import __version__
from mura_core.recipes import Recipe
from mura_core.run_contract import EpochReport, TrainRunParams
from mura_core.shards import ShardsLayout
from pipelines.registry.tracking import check_tracking, file_digest, git_commit
from pipelines.runtime.cluster import cluster_cpus, ensure_ray
from pipelines.runtime.console import console
from pipelines.runtime.progress import progress_feed
from pipelines.shards.shardsets import ShardStats
from pipelines.train.callback import EpochLogger
from pipelines.train.config import SPLITS, TrainConfig
from pipelines.train.data import data_config, positive_weights, shuffle_rows, train_datasets
from pipelines.train.errors import TrainCollapsed
from pipelines.train.finish import TrainResult, finish
from pipelines.train.loop import LoopConfig, train_loop_per_worker
from pipelines.train.prepare import Checked, preflight
from pipelines.train.session import (
    OpenRun,
    RunPlace,
    finished,
    fit,
    new_run,
    resumed_run,
    run_config,
    scaling,
)

log = logging.getLogger(__name__)


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
        datasets=train_datasets(shards, stats, cfg.body_part, cfg.seed),
        dataset_config=data_config(),
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
            result = fit(_trainer(cfg, checked, place, run, sink))
        _say_how_it_ended(cfg.recipe, result)
        with tempfile.TemporaryDirectory(prefix="mura-train-") as tmp:
            return finish(cfg, result, Path(tmp), checked, client, run.run_id)


def _say_how_it_ended(recipe: Recipe, result: ray.train.Result) -> None:
    epoch = EpochReport.from_dict(result.metrics or {}).epoch
    if recipe.early_stop and epoch < recipe.epochs:
        console.print(
            f"[train] stopped early after epoch {epoch}: val loss did not improve for "
            f"{recipe.early_stop} epochs"
        )
