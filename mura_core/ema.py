"""Weight EMA: an exponential moving average of a model's weights, the model that is evaluated.

Training from scratch on a few thousand radiographs gives noisy weights from one step to the
next (small batches, strong augmentation, a class seen in one image of six); the average over
the last few hundred steps generalizes better and steadier than the last step's weights
(Polyak averaging; timm's ModelEmaV2). Used as:

    ema = ModelEMA(model, decay=0.99)
    ... optimizer.step(); ema.update(model)
    evaluate(ema.module)

Every floating-point tensor of the state_dict (parameters and BatchNorm running statistics)
is averaged: ema ← decay·ema + (1 − decay)·model, with the decay ramped in as
min(decay, (1 + n) / (10 + n)) after n updates (`warmup=True`), so the first epochs are not
dominated by the random init; integer buffers (BatchNorm's step count) are copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """The averaged copy (`module`, in eval mode, no gradients) of a training model."""

    def __init__(self, model: nn.Module, decay: float = 0.99, *, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next update uses."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights in (call after each optimizer step)."""
        decay = self.current_decay()
        own = self.module.state_dict()
        for key, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                own[key].lerp_(value.detach(), 1.0 - decay)
            else:
                own[key].copy_(value)
        self.updates += 1

    def state_dict(self) -> dict[str, object]:
        """The averaged weights and the update count (resume)."""
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.module.load_state_dict(state["module"])  # type: ignore[arg-type]
        self.updates = int(state["updates"])  # type: ignore[call-overload]
