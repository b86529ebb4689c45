"""The per-worker training loop (Ray Train V2): reads top to bottom like a torchvision recipe.

`train_loop_per_worker`: model (initial weights from the run's seed, or the tensors the driver
resolved; a one-channel stem when the recipe says so), optimizer (Adam, or AdamW with decay on
weights only), schedule (per epoch: plateau or constant; per step: warm-up + cosine), weight
EMA when the recipe has one (the averaged weights are what is evaluated and checkpointed) →
resume from `ray.train.get_checkpoint()` if there is one → for each epoch: `train_one_epoch`
over this worker's shard (augmented, global RNG seeded per (seed, rank, epoch) for dropout,
so a seeded run repeats and a resumed epoch sees the same draws), `evaluate` on rank 0 (the
full val split, so study-level AUROC sees whole studies; with the spread of the outputs,
`val_collapsed` when they have none), `ray.train.report` with the epoch's `EpochReport`
(`mura_core.run_contract`: a flat dict of numbers at Ray's boundary) and a checkpoint
→ stop early when val loss has not improved for the recipe's `early_stop` epochs. A lost
worker costs at most the epoch in progress.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from mura_core.checkpoints import (
    TrainingState,
    load_training_checkpoint,
    save_training_checkpoint,
    unwrap,
)
from mura_core.collapse import output_spread
from mura_core.decisions import PAPER_THRESHOLD, flagged
from mura_core.ema import ModelEMA
from mura_core.model_info import ModelInfo
from mura_core.models import build_model
from mura_core.recipes import Recipe
from mura_core.run_contract import EpochReport
from mura_core.schedules import adamw, warmup_cosine
from mura_core.studies import aggregate
from pipelines.runtime.progress import ProgressSink
from pipelines.shards.shardsets import TrainingBatch


@dataclass(frozen=True)
class LoopConfig:
    """Everything a worker needs, built by the driver (`pipelines.train.run`)."""

    recipe: Recipe
    seed: int = 0
    weights: Any = None  # ObjectRef of the initial state_dict, resolved by the driver
    loss_weights: dict[int, tuple[float, float]] | None = None
    shuffle_rows: int = 0
    torch_threads: int | None = None
    train_images: int = 0  # this run's training images, all workers together (progress)
    progress: ProgressSink | None = None


def _batch_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    parts: torch.Tensor,
    weights: dict[int, tuple[float, float]] | None,
) -> torch.Tensor:
    """BCE on logits; per-sample weights w+/w- by body part when the recipe asks for them."""
    if not weights:
        return F.binary_cross_entropy_with_logits(logits, labels)
    w_pos = torch.tensor(
        [weights.get(int(p), (1.0, 1.0))[0] for p in parts.tolist()], device=logits.device
    )
    w_neg = torch.tensor(
        [weights.get(int(p), (1.0, 1.0))[1] for p in parts.tolist()], device=logits.device
    )
    sample_w = torch.where(labels > 0.5, w_pos, w_neg)
    return F.binary_cross_entropy_with_logits(logits, labels, weight=sample_w)


def _autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"
    )


def evaluate(
    model: torch.nn.Module,
    shard: Any,
    recipe: Recipe,
    device: torch.device,
    weights: dict[int, tuple[float, float]] | None,
) -> dict[str, float | bool]:
    """Loss, image accuracy, study-level AUROC and the outputs' spread on the val split:
    `EpochReport`'s val fields, by name (none when the split has no labelled image)."""
    preset = recipe.train_preset().eval_preset()
    model.eval()
    probs, labels, studies, parts, loss_sum = [], [], [], [], 0.0
    with torch.inference_mode():
        for raw in shard.iter_torch_batches(batch_size=max(32, recipe.batch_size)):
            batch = TrainingBatch.of(raw).labelled()
            if batch is None:
                continue
            x = preset(batch.pixels.to(device))
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            y = batch.label.to(device)
            with _autocast(device):
                logits = model(x).float()
            loss_sum += float(_batch_loss(logits, y, batch.body_part, weights)) * len(y)
            probs.append(torch.sigmoid(logits).cpu().numpy())
            labels.append(y.cpu().numpy())
            studies.append(batch.study.numpy())
            parts.append(batch.body_part.numpy())
    if not probs:
        return {}
    p, y = np.concatenate(probs), np.concatenate(labels).astype(int)
    spread = output_spread(p, y)
    out = {
        "val_loss": loss_sum / len(p),
        "val_accuracy": float((flagged(p, PAPER_THRESHOLD) == y).mean()),
        "val_logit_std": spread.logit_std,
        "val_collapsed": bool(spread.collapsed),
    }
    st = aggregate(
        list(np.concatenate(studies).astype(str)),
        list(p),
        list(y),
        list(np.concatenate(parts).astype(str)),
    )
    if len(set(st.label.tolist())) == 2:
        out["val_study_auroc"] = float(roc_auc_score(st.label, st.prob))
    return out


def _all_reduce(values: list[float], device: torch.device) -> list[float]:
    """Sum per-rank counters over the worker group (epoch loss and accuracy of all shards)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def _broadcast(value: float, device: torch.device) -> float:
    """Rank 0's validation loss to every rank, so their LR schedules stay identical."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def _optimizer(recipe: Recipe, model: torch.nn.Module) -> torch.optim.Optimizer:
    if recipe.optimizer == "adamw":
        return adamw(model, lr=recipe.lr, weight_decay=recipe.weight_decay, betas=recipe.betas)
    return torch.optim.Adam(
        model.parameters(), lr=recipe.lr, betas=recipe.betas, weight_decay=recipe.weight_decay
    )


@dataclass
class Stepping:
    """What changes with every optimizer step besides the weights: a per-step schedule
    (warm-up + cosine) and the weight EMA; either may be absent."""

    schedule: Any = None
    ema: ModelEMA | None = None

    def after_step(self, model: torch.nn.Module) -> None:
        if self.schedule is not None:
            self.schedule.step()
        if self.ema is not None:
            self.ema.update(unwrap(model))


def _steps_per_epoch(cfg: LoopConfig) -> int:
    world = ray.train.get_context().get_world_size()
    return max(1, math.ceil(cfg.train_images / world / cfg.recipe.batch_size))


def _scheduler(recipe: Recipe, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> Any:
    if recipe.schedule == "cosine":
        return warmup_cosine(
            optimizer,
            epochs=recipe.epochs,
            steps_per_epoch=steps_per_epoch,
            warmup_epochs=recipe.warmup_epochs,
        )
    if not recipe.plateau_patience:
        return None
    # Keras semantics (reduce after N stale epochs) = PyTorch patience N - 1
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="min",
        factor=recipe.plateau_factor,
        patience=max(0, recipe.plateau_patience - 1),
    )


def _epoch_seed(seed: int, rank: int, epoch: int) -> int:
    return seed * 1_000_003 + rank * 10_007 + epoch


def train_one_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    shard: Any,
    cfg: LoopConfig,
    epoch: int,
    device: torch.device,
    stepping: Stepping | None = None,
) -> dict[str, float]:
    """One augmented pass over this worker's shard; loss and accuracy over all workers
    (`EpochReport`'s `train_loss` and `train_accuracy`)."""
    recipe, rank = cfg.recipe, ray.train.get_context().get_world_rank()
    # a fresh generator per (seed, rank, epoch) for augmentation, and the process's global
    # RNG (dropout) seeded the same way: a seeded run repeats, a resumed epoch too
    generator = torch.Generator().manual_seed(_epoch_seed(cfg.seed, rank, epoch))
    torch.manual_seed(_epoch_seed(cfg.seed, rank, epoch))
    preset, ticker = recipe.train_preset(), _ticker(cfg, epoch, rank)
    model.train()
    loss_sum, correct, n = 0.0, 0, 0
    for raw in shard.iter_torch_batches(
        batch_size=recipe.batch_size,
        local_shuffle_buffer_size=cfg.shuffle_rows or 4 * recipe.batch_size,
        local_shuffle_seed=cfg.seed + epoch,
    ):
        batch = TrainingBatch.of(raw).labelled()
        if batch is None:
            continue
        x = preset(batch.pixels, generator).to(device)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        y = batch.label.to(device)
        with _autocast(device):
            logits = model(x).float()
        loss = _batch_loss(logits, y, batch.body_part, cfg.loss_weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if stepping is not None:
            stepping.after_step(model)
        loss_sum += float(loss.detach()) * len(y)
        correct += int(((logits.detach() > 0) == (y > 0.5)).sum())
        n += len(y)
        ticker(n)
    loss_sum, correct, n = _all_reduce([loss_sum, float(correct), float(n)], device)
    return {"train_loss": loss_sum / max(n, 1), "train_accuracy": correct / max(n, 1)}


def _ticker(cfg: LoopConfig, epoch: int, rank: int) -> Any:
    """Rank 0 tells the driver's console how far the epoch is (others stay silent)."""
    if cfg.progress is None or rank != 0:
        return lambda done: None
    world = ray.train.get_context().get_world_size()
    total = max(1, cfg.train_images // world)
    label = f"epoch {epoch}/{cfg.recipe.epochs}"
    return lambda done: cfg.progress.tick(label, min(done, total), total, unit="images")


def stale_epochs(history: list[EpochReport]) -> int:
    """Epochs since the best validation loss (0 when the last epoch was the best)."""
    losses = [math.inf if h.val_loss is None else h.val_loss for h in history]
    if not losses:
        return 0
    return len(losses) - 1 - int(np.argmin(losses))


def _resume(
    model: torch.nn.Module, optimizer: Any, scheduler: Any, ema: ModelEMA | None
) -> tuple[int, list[EpochReport]]:
    """(first epoch to run, history so far) from Ray Train's checkpoint, if there is one.
    With EMA the bundle's weights are the average; the trained ones are in the state."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 1, []
    with checkpoint.as_directory() as folder:
        state = load_training_checkpoint(Path(folder), model if ema is None else ema.module)
    if ema is not None and state.trained is not None:
        model.load_state_dict(state.trained)
        ema.updates = state.ema_updates
    optimizer.load_state_dict(state.optimizer)
    if scheduler is not None and state.scheduler:
        scheduler.load_state_dict(state.scheduler)
    return state.epoch + 1, list(state.history)


def _build(cfg: LoopConfig) -> torch.nn.Module:
    """The initial model: weights from the run's seed, without touching the process's
    global RNG state, or the tensors the driver resolved (in the object store)."""
    recipe = cfg.recipe
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return build_model(
            recipe.model,
            size=recipe.size,
            weights=None if cfg.weights is None else ray.get(cfg.weights),
            in_channels=recipe.in_channels,
        )


def _state(
    epoch: int,
    optimizer: Any,
    scheduler: Any,
    history: list[EpochReport],
    model: Any,
    ema: ModelEMA | None,
) -> TrainingState:
    trained = None
    if ema is not None:
        trained = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    return TrainingState(
        epoch,
        optimizer.state_dict(),
        scheduler.state_dict() if scheduler is not None else {},
        history,
        trained=trained,
        ema_updates=ema.updates if ema is not None else 0,
    )


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: `config["loop"]` is the driver's LoopConfig."""
    cfg: LoopConfig = config["loop"]
    recipe = cfg.recipe
    rank = ray.train.get_context().get_world_rank()
    device = ray.train.torch.get_device()
    if device.type == "cpu" and cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    model = _build(cfg)
    optimizer = _optimizer(recipe, model)
    scheduler = _scheduler(recipe, optimizer, _steps_per_epoch(cfg))
    ema = ModelEMA(model, decay=recipe.ema_decay) if recipe.ema_decay else None
    stepping = Stepping(scheduler if recipe.schedule == "cosine" else None, ema)
    start_epoch, history = _resume(model, optimizer, scheduler, ema)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if ema is not None:
        ema.module.to(device)
    model = ray.train.torch.prepare_model(model)
    info = ModelInfo.from_recipe(recipe)
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    for epoch in range(start_epoch, recipe.epochs + 1):
        started = time.perf_counter()
        trained = train_one_epoch(model, optimizer, train_shard, cfg, epoch, device, stepping)
        report = EpochReport(epoch, lr=optimizer.param_groups[0]["lr"], **trained)
        evaluated = unwrap(model) if ema is None else ema.module  # the model checkpointed
        if rank == 0:
            report = replace(
                report, **evaluate(evaluated, val_shard, recipe, device, cfg.loss_weights)
            )
        val_loss = _broadcast(math.nan if report.val_loss is None else report.val_loss, device)
        if stepping.schedule is None and scheduler is not None and math.isfinite(val_loss):
            scheduler.step(val_loss)
        report = replace(report, epoch_seconds=time.perf_counter() - started)
        history.append(replace(report, val_loss=val_loss))
        state = _state(epoch, optimizer, scheduler, history, model, ema)
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                save_training_checkpoint(Path(tmp), evaluated, info, state)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(report.to_dict(), checkpoint=checkpoint)
        if recipe.early_stop and stale_epochs(history) >= recipe.early_stop:
            break  # every rank sees the same broadcast val loss, so all stop together
