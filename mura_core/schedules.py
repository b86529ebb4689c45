"""Optimizer and learning-rate schedule for training from scratch: AdamW, linear warm-up, cosine.

`adamw(model, lr=..., weight_decay=...)`: decoupled weight decay (Loshchilov & Hutter) on the
weights of convolutions and linear layers only; biases and normalization scales/shifts
(every tensor with fewer than 2 dimensions) are not decayed, since decaying them only fights
BatchNorm. `warmup_cosine(optimizer, epochs=..., steps_per_epoch=...)`: a per-step
LambdaLR — the learning rate climbs linearly from ~0 to the optimizer's lr over
`warmup_epochs` (a randomly initialised network with BatchNorm is fragile for its first few
hundred steps at a high lr), then follows half a cosine down to `min_ratio`·lr at the last
step. Call `scheduler.step()` after every `optimizer.step()`.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR


def adamw(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float = 0.05,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.AdamW:
    """AdamW with weight decay on ≥ 2-D weights only (see the module doc)."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.dim() >= 2 else no_decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def warmup_cosine_factor(step: int, total: int, warmup: int, min_ratio: float = 0.0) -> float:
    """The lr multiplier at `step` (0-based) of `total`: linear up over `warmup` steps to 1,
    then cosine down to `min_ratio` at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, total - 1 - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float = 1.0,
    min_ratio: float = 0.0,
) -> LambdaLR:
    """A per-step scheduler: `warmup_epochs` of linear warm-up, then cosine to the end."""
    if epochs < 1 or steps_per_epoch < 1:
        raise ValueError("epochs and steps_per_epoch must be >= 1")
    if warmup_epochs < 0 or not 0.0 <= min_ratio <= 1.0:
        raise ValueError("warmup_epochs must be >= 0 and min_ratio in [0, 1]")
    total = epochs * steps_per_epoch
    warmup = min(total - 1, round(warmup_epochs * steps_per_epoch))
    return LambdaLR(optimizer, lambda step: warmup_cosine_factor(step, total, warmup, min_ratio))
