"""The per-worker pretraining loop (Ray Train V2): VICReg over this worker's share of images.

`pretrain_loop_per_worker`: the encoder + projector (`mura_core.ssl.build_ssl_model`, from
the run's seed), AdamW with warm-up + cosine (`mura_core.schedules`), resume from
`ray.train.get_checkpoint()` → for each epoch: two `TrainPreset` views of every batch (a
local generator seeded per (seed, rank, epoch)), the VICReg loss — on several workers over
the embeddings gathered from all of them (`gather`, the paper's FullGatherLayer) — a step per batch,
then `ray.train.report` with the epoch's `PretrainEpochReport` (mean loss and terms; a flat
dict of numbers at Ray's boundary, `mura_core.run_contract`) and a checkpoint (rank 0).
Labels are never read: the rows' pixels are all it uses. A lost worker costs at most the
epoch in progress.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch

from mura_core.checkpoints import TrainingState, load_training_checkpoint, save_training_checkpoint
from mura_core.model_info import ModelInfo
from mura_core.run_contract import PretrainEpochReport
from mura_core.schedules import adamw, warmup_cosine
from mura_core.ssl import (
    VICREG_TERMS,
    build_ssl_model,
    embedding_std,
    ssl_preset,
    two_views,
    vicreg_loss,
)
from pipelines.pretrain.gather import gather
from pipelines.runtime.progress import ProgressSink
from pipelines.shards.shardsets import TrainingBatch

DATASET = "images"  # the one dataset the trainer gets: train + val pixels


@dataclass(frozen=True)
class PretrainLoop:
    """Everything a worker needs, built by the driver (`pipelines.pretrain.run`)."""

    model: str
    size: int
    batch_size: int  # per worker
    epochs: int
    lr: float
    weight_decay: float
    warmup_epochs: float
    projector_dim: int
    info: ModelInfo  # the checkpoints' model.json
    steps_per_epoch: int = 1  # per worker: the schedule's length
    seed: int = 0
    shuffle_rows: int = 0
    torch_threads: int | None = None
    images: int = 0  # all workers together (progress)
    progress: ProgressSink | None = None


def _seed(seed: int, rank: int, epoch: int) -> int:
    return seed * 1_000_003 + rank * 10_007 + epoch


def _autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"
    )


def pretrain_one_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    shard: Any,
    cfg: PretrainLoop,
    epoch: int,
    device: torch.device,
) -> dict[str, float]:
    """One pass over this worker's shard: the epoch's mean loss, terms and embedding spread
    (each step's loss is already the global batch's, so rank 0's means are the run's)."""
    rank = ray.train.get_context().get_world_rank()
    generator = torch.Generator().manual_seed(_seed(cfg.seed, rank, epoch))
    torch.manual_seed(_seed(cfg.seed, rank, epoch))
    preset, ticker = ssl_preset(cfg.size), _ticker(cfg, epoch, rank)
    model.train()
    sums = dict.fromkeys((*VICREG_TERMS, "embedding_std"), 0.0)
    steps, seen = 0, 0
    for raw in shard.iter_torch_batches(
        batch_size=cfg.batch_size,
        local_shuffle_buffer_size=cfg.shuffle_rows or 4 * cfg.batch_size,
        local_shuffle_seed=cfg.seed + epoch,
        drop_last=True,  # every rank the same steps and shapes; VICReg needs >= 2 a batch
    ):
        pixels = TrainingBatch.of(raw).pixels  # labels, known or not, are never looked at
        v1, v2 = (v.to(device) for v in two_views(preset, pixels, generator))
        if device.type == "cuda":
            v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
        with _autocast(device):
            z1, z2 = model(v1), model(v2)
        terms = vicreg_loss(gather(z1.float()), gather(z2.float()))
        optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        optimizer.step()
        scheduler.step()
        for key, value in terms.floats().items():
            sums[key] += value
        sums["embedding_std"] += embedding_std(z1)
        steps += 1
        seen += len(pixels)
        ticker(seen)
    return {key: value / max(steps, 1) for key, value in sums.items()} | {"steps": float(steps)}


def _ticker(cfg: PretrainLoop, epoch: int, rank: int) -> Any:
    """Rank 0 tells the driver's console how far the epoch is (others stay silent)."""
    if cfg.progress is None or rank != 0:
        return lambda done: None
    world = ray.train.get_context().get_world_size()
    total = max(1, cfg.images // world)
    label = f"epoch {epoch}/{cfg.epochs}"
    return lambda done: cfg.progress.tick(label, min(done, total), total, unit="images")


def _resume(
    model: torch.nn.Module, optimizer: Any, scheduler: Any
) -> tuple[int, list[PretrainEpochReport]]:
    """(first epoch to run, history so far) from Ray Train's checkpoint, if there is one."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 1, []
    with checkpoint.as_directory() as folder:
        state = load_training_checkpoint(Path(folder), model, PretrainEpochReport)
    optimizer.load_state_dict(state.optimizer)
    scheduler.load_state_dict(state.scheduler)
    return state.epoch + 1, list(state.history)


def pretrain_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: `config["loop"]` is the driver's PretrainLoop."""
    cfg: PretrainLoop = config["loop"]
    rank = ray.train.get_context().get_world_rank()
    device = ray.train.torch.get_device()
    if device.type == "cpu" and cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_ssl_model(cfg.model, size=cfg.size, projector_dim=cfg.projector_dim)
    optimizer = adamw(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = warmup_cosine(
        optimizer,
        epochs=cfg.epochs,
        steps_per_epoch=cfg.steps_per_epoch,
        warmup_epochs=cfg.warmup_epochs,
        min_ratio=0.01,
    )
    start_epoch, history = _resume(model, optimizer, scheduler)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    model = ray.train.torch.prepare_model(model)
    info = cfg.info
    shard = ray.train.get_dataset_shard(DATASET)
    for epoch in range(start_epoch, cfg.epochs + 1):
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        figures = pretrain_one_epoch(model, optimizer, scheduler, shard, cfg, epoch, device)
        report = PretrainEpochReport(
            epoch, lr=lr, epoch_seconds=time.perf_counter() - started, **figures
        )
        history.append(report)
        state = TrainingState(epoch, optimizer.state_dict(), scheduler.state_dict(), history)
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                save_training_checkpoint(Path(tmp), model, info, state)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(report.to_dict(), checkpoint=checkpoint)
