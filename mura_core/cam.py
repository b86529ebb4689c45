"""Class activation maps: where the model looks (the seed paper's figures 12–14).

One implementation, used by training, evaluation and screening. Grad-CAM on the last
convolutional block — for a ResNet the one before it (`layer3`, stride 16; see
`cam_target`) — : channel weights are the mean gradient of the abnormality logit, the map
is the ReLU of the weighted sum of activations, upsampled to the input and divided by its own
peak. For DenseNet (global average pooling then one linear layer) this is exactly the classic
CAM of Zhou et al.; for the seed CNN (flatten + dense layers) it is the gradient
generalisation of it. An `Ensemble`'s map is the mean of its members' maps (each normalised
by its own peak first), its probability the ensemble's. A `FlipTTA` model's map is the mean
of the map of the image and the mirrored map of its mirror, its probability the TTA's.

The inputs go through in batches of `batch_size`. Only the layers after the block are
differentiated: the block's output is cut from the graph (a fresh leaf), so the network
below it runs like inference and its activations are not kept for a backward pass.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from mura_core.models import Ensemble, FlipTTA, SeedCNN  # noqa: E402

CAM_BATCH = 4  # images per pass: bounds the driver's memory with DenseNet-169 at 320 px


def cam_target(model: nn.Module) -> nn.Module:
    """The feature block of a single model where its maps are taken (an `Ensemble` has one
    per member: `class_activation_maps` takes each in turn): the last one, except for a
    ResNet, whose `layer3` (stride 16) is taken. Measured on FracAtlas's fractured val
    images (scratch, ResNet-18 at 128 px, 73 with boxes): the peak within 15 px@224 of a
    fracture box for 27 % of them from layer3, 15 % from layer4 (a 4 × 4 map at that size,
    whose bilinear peak can sit at 16 places only), 8 % from layer2; on test, 0.27 vs 0.12
    (strictly inside a box: 0.12 vs 0.00)."""
    if isinstance(model, SeedCNN):
        return model.features
    net = getattr(model, "net", model)
    if hasattr(net, "features"):
        return net.features
    if hasattr(net, "layer3"):
        return net.layer3
    raise ValueError(f"no known feature block in {type(net).__name__} for CAM")


def _grad_cam(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One single model, one batch → (maps (B, S, S) in [0, 1], probabilities (B,))."""
    saved: list[torch.Tensor] = []

    def cut(_module: nn.Module, _inp: tuple, out: torch.Tensor) -> torch.Tensor:
        # a leaf here: no graph below the block; its clone may be changed in place later
        # (DenseNet's ReLU), and the gradient is then taken at what the head really reads
        saved.append(out.detach().requires_grad_(True).clone())
        return saved[-1]

    handle = cam_target(model).register_forward_hook(cut)
    frozen = [p for p in model.parameters() if p.requires_grad]
    try:
        for param in frozen:
            param.requires_grad_(False)
        with torch.enable_grad():
            logits = model(x).float()
            (grad,) = torch.autograd.grad(logits.sum(), saved[-1])
    finally:
        handle.remove()
        for param in frozen:
            param.requires_grad_(True)
    act = saved[-1].detach()
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * act).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False).squeeze(1)
    peak = cam.flatten(1).max(dim=1).values.clamp_min(1e-12).view(-1, 1, 1)
    return cam / peak, torch.sigmoid(logits.detach())


def _maps(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps and probabilities of one batch; an ensemble's are its members' means, a flip
    TTA's the mean over the image and its mirror (that map mirrored back)."""
    if isinstance(model, FlipTTA):
        (plain, p_plain), (mirror, p_mirror) = _maps(model.model, x), _maps(model.model, x.flip(-1))
        return (plain + mirror.flip(-1)) / 2, Ensemble.combine([p_plain, p_mirror])
    if not isinstance(model, Ensemble):
        return _grad_cam(model, x)
    parts = [_maps(member, x) for member in model.members]
    maps = torch.stack([m for m, _ in parts]).mean(0)
    return maps, Ensemble.combine([p for _, p in parts])


def class_activation_maps(
    model: nn.Module, inputs: torch.Tensor, *, batch_size: int = CAM_BATCH
) -> tuple[np.ndarray, np.ndarray]:
    """(B, 3, S, S) model inputs → (maps (B, S, S) in [0, 1], probabilities (B,)), for a
    single model or an `Ensemble` (nested ones too), `batch_size` images at a time."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    was_training = model.training
    model.eval()
    maps, probs = [], []
    try:
        for start in range(0, len(inputs), batch_size):
            m, p = _maps(model, inputs[start : start + batch_size].detach())
            maps.append(m.cpu().numpy())
            probs.append(p.cpu().numpy())
    finally:
        model.train(was_training)
    if not maps:
        size = inputs.shape[-2:]
        return np.zeros((0, *size), np.float32), np.zeros(0, np.float32)
    return np.concatenate(maps).astype(np.float32), np.concatenate(probs).astype(np.float32)


def pixel_maps(
    model: nn.Module,
    preset: Callable[[torch.Tensor], torch.Tensor],
    pixels: np.ndarray,
    device: torch.device | None = None,
) -> np.ndarray:
    """Uint8 (B, S, S) pixels → their maps (B, S, S): the eval `preset` (on `device`),
    then `class_activation_maps`, CAM_BATCH images at a time."""
    images = torch.from_numpy(np.ascontiguousarray(pixels))
    if device is not None:
        images = images.to(device)
    return class_activation_maps(model, preset(images))[0]


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
