"""The per-worker training loop (Ray Train V2): reads top to bottom like a torchvision recipe.

Model, optimizer, plateau scheduler → resume from `ray.train.get_checkpoint()` if there is one
→ for each epoch: augmented training pass over this worker's shard, validation on rank 0
(the full val split, so study-level AUROC sees whole studies), `ray.train.report` with the
metrics and a checkpoint. A lost worker costs at most the epoch in progress.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from mura_core.checkpoints import ModelInfo, save_bundle, unwrap
from mura_core.models import build_model
from mura_core.recipes import Recipe
from mura_core.studies import aggregate

TRAIN_STATE = "train_state.pt"
HISTORY = "history.json"


class InjectedFailure(RuntimeError):
    """Raised once by the test hook, to exercise recovery from a lost worker."""


def _maybe_fail(config: dict[str, Any], epoch: int) -> None:
    """Test hook: fail once at `fail_once_at_epoch`, remembered by a marker file."""
    at, marker = config.get("fail_once_at_epoch"), config.get("fail_marker")
    if at is None or epoch != at or marker is None:
        return
    path = Path(marker)
    if not path.exists():
        path.write_text(f"failed at epoch {epoch}\n")
        raise InjectedFailure(f"injected failure at epoch {epoch} (test hook)")


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


def _evaluate(
    model: torch.nn.Module,
    shard: Any,
    recipe: Recipe,
    device: torch.device,
    weights: dict[int, tuple[float, float]] | None,
) -> dict[str, float]:
    """Loss, image accuracy and study-level AUROC on a (whole) validation split."""
    preset = recipe.train_preset().eval_preset()
    model.eval()
    probs, labels, studies, parts, loss_sum, n = [], [], [], [], 0.0, 0
    with torch.inference_mode():
        for batch in shard.iter_torch_batches(batch_size=max(32, recipe.batch_size)):
            keep = batch["label"] >= 0
            if not keep.any():
                continue
            x = preset(batch["pixels"][keep].to(device))
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            y = batch["label"][keep].to(device)
            part = batch["body_part"][keep]
            with _autocast(device):
                logits = model(x).float()
            loss_sum += float(_batch_loss(logits, y, part, weights)) * len(y)
            n += len(y)
            probs.append(torch.sigmoid(logits).cpu().numpy())
            labels.append(y.cpu().numpy())
            studies.append(batch["study"][keep].numpy())
            parts.append(part.numpy())
    if n == 0:
        return {}
    p, y = np.concatenate(probs), np.concatenate(labels).astype(int)
    out = {"val_loss": loss_sum / n, "val_accuracy": float(((p > 0.5) == y).mean())}
    st = aggregate(
        list(np.concatenate(studies).astype(str)),
        list(p),
        list(y),
        list(np.concatenate(parts).astype(str)),
    )
    if len(set(st.label.tolist())) == 2:
        out["val_study_auroc"] = float(roc_auc_score(st.label, st.prob))
    return out


def _save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    epoch: int,
    history: list[dict[str, float]],
    info: ModelInfo,
) -> None:
    save_bundle(folder, model, info)
    state = {
        "epoch": epoch,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else {},
    }
    torch.save(state, folder / TRAIN_STATE)
    (folder / HISTORY).write_text(json.dumps(history))


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


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point; `config` holds plain JSON-able values only."""
    recipe = Recipe.from_dict(config["recipe"])
    context = ray.train.get_context()
    rank = context.get_world_rank()
    device = ray.train.torch.get_device()
    if device.type == "cpu" and config.get("torch_threads"):
        torch.set_num_threads(int(config["torch_threads"]))
    loss_weights = {int(k): tuple(v) for k, v in (config.get("loss_weights") or {}).items()}
    info = ModelInfo.from_recipe(recipe)

    seed = int(config.get("seed", 0))
    # initial weights from the run's seed, without touching the process's global RNG state
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(recipe.model, size=recipe.size, weights=config.get("weights"))
    optimizer = torch.optim.Adam(
        model.parameters(), lr=recipe.lr, betas=recipe.betas, weight_decay=recipe.weight_decay
    )
    scheduler = None
    if recipe.plateau_patience:
        # Keras semantics (reduce after N stale epochs) = PyTorch patience N - 1
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="min",
            factor=recipe.plateau_factor,
            patience=max(0, recipe.plateau_patience - 1),
        )
    start_epoch, history = 1, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            folder = Path(folder)
            model.load_state_dict(
                torch.load(folder / "weights.pt", map_location="cpu", weights_only=True)
            )
            state = torch.load(folder / TRAIN_STATE, map_location="cpu", weights_only=True)
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None and state["scheduler"]:
                scheduler.load_state_dict(state["scheduler"])
            start_epoch = int(state["epoch"]) + 1
            history = json.loads((folder / HISTORY).read_text())
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    model = ray.train.torch.prepare_model(model)

    train_preset = recipe.train_preset()
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    for epoch in range(start_epoch, recipe.epochs + 1):
        _maybe_fail(config, epoch)
        # a fresh generator per (seed, rank, epoch): a resumed epoch sees the same augmentations
        generator = torch.Generator().manual_seed(seed * 1_000_003 + rank * 10_007 + epoch)
        model.train()
        loss_sum, correct, n = 0.0, 0, 0
        for batch in train_shard.iter_torch_batches(
            batch_size=recipe.batch_size,
            local_shuffle_buffer_size=int(config.get("shuffle_rows") or 4 * recipe.batch_size),
            local_shuffle_seed=seed + epoch,
        ):
            keep = batch["label"] >= 0
            if not keep.any():
                continue
            x = train_preset(batch["pixels"][keep], generator).to(device)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            y = batch["label"][keep].to(device)
            with _autocast(device):
                logits = model(x).float()
            loss = _batch_loss(logits, y, batch["body_part"][keep], loss_weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(y)
            correct += int(((logits.detach() > 0) == (y > 0.5)).sum())
            n += len(y)
        loss_sum, correct, n = _all_reduce([loss_sum, float(correct), float(n)], device)
        metrics: dict[str, float] = {
            "epoch": epoch,
            "train_loss": loss_sum / max(n, 1),
            "train_accuracy": correct / max(n, 1),
            "lr": optimizer.param_groups[0]["lr"],
        }
        if rank == 0:
            metrics.update(_evaluate(unwrap(model), val_shard, recipe, device, loss_weights))
        val_loss = _broadcast(metrics.get("val_loss", math.nan), device)
        if scheduler is not None and math.isfinite(val_loss):
            scheduler.step(val_loss)
        history.append(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                _save_checkpoint(Path(tmp), model, optimizer, scheduler, epoch, history, info)
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)
