"""Class activation maps: where the model looks (the seed paper's figures 12–14).

Grad-CAM on the last convolutional block: channel weights are the mean gradient of the
abnormality logit, the map is the ReLU of the weighted sum of activations. For DenseNet
(global average pooling then one linear layer) this is exactly the classic CAM of Zhou et
al.; for the seed CNN (flatten + dense layers) it is the gradient generalisation of it.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from .models import cam_target  # noqa: E402


def class_activation_maps(model: nn.Module, inputs: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(B, 3, S, S) model inputs → (maps (B, S, S) in [0, 1], probabilities (B,))."""
    target = cam_target(model)
    saved: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        out.retain_grad()
        saved["act"] = out

    handle = target.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        x = inputs.detach().clone().requires_grad_(False)
        with torch.enable_grad():
            logits = model(x)
            model.zero_grad(set_to_none=True)
            logits.sum().backward()
        act, grad = saved["act"], saved["act"].grad
        weights = grad.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * act).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam, size=inputs.shape[-2:], mode="bilinear", align_corners=False)
        cam = cam.squeeze(1)
        peak = cam.flatten(1).max(dim=1).values.clamp_min(1e-12).view(-1, 1, 1)
        maps = (cam / peak).detach().cpu().numpy()
        probs = torch.sigmoid(logits).detach().cpu().numpy()
    finally:
        handle.remove()
        model.train(was_training)
    return maps.astype(np.float32), probs.astype(np.float32)


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """Grayscale uint8 (H, W) + map in [0, 1] → RGB uint8 heat-map overlay."""
    if cam.shape != image.shape:
        cam = (
            np.asarray(
                Image.fromarray((cam * 255).astype(np.uint8)).resize(
                    (image.shape[1], image.shape[0]), Image.Resampling.BILINEAR
                )
            )
            / 255.0
        )
    heat = colormaps["jet"](np.clip(cam, 0, 1))[..., :3]
    gray = np.repeat(image[..., None] / 255.0, 3, axis=2)
    mixed = (1 - alpha * cam[..., None]) * gray + alpha * cam[..., None] * heat
    return (np.clip(mixed, 0, 1) * 255).astype(np.uint8)


def overlay_png(image: np.ndarray, cam: np.ndarray, path: str | Path | None = None) -> bytes:
    """PNG bytes of the overlay (also written to `path` when given)."""
    buffer = io.BytesIO()
    Image.fromarray(overlay(image, cam)).save(buffer, format="PNG")
    data = buffer.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data
