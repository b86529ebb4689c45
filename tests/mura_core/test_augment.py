"""The from-scratch ingredients: one-channel stems, flip TTA, weight EMA, warm-up + cosine, and
the radiograph augmentation of TrainPreset (off by default: existing presets unchanged)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mura_core.ema import ModelEMA
from mura_core.models import FlipTTA, build_model
from mura_core.recipes import recipe
from mura_core.schedules import adamw, warmup_cosine
from mura_core.transforms import EvalPreset, TrainPreset

BACKBONES = ["resnet18", "resnet34", "densenet121", "efficientnet_b0"]


@pytest.mark.parametrize("name", BACKBONES)
def test_one_channel_stem_equals_the_three_channel_net_on_replicated_gray(name: str) -> None:
    torch.manual_seed(0)
    three = build_model(name, size=64).eval()
    torch.manual_seed(0)
    one = build_model(name, size=64, in_channels=1).eval()
    stem = next(m for m in one.modules() if isinstance(m, nn.Conv2d))
    assert stem.in_channels == 1
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        out = one(x)
        assert out.shape == (2,)
        assert torch.allclose(out, three(x.expand(-1, 3, -1, -1)), atol=1e-4)
        # a 3-channel preset still feeds it (the channels averaged)
        assert torch.allclose(one(x.expand(-1, 3, -1, -1)), out, atol=1e-5)


def test_one_channel_is_refused_for_the_seed_cnn_and_odd_counts() -> None:
    with pytest.raises(ValueError, match="3 channels"):
        build_model("cnn", size=64, in_channels=1)
    with pytest.raises(ValueError, match="in_channels"):
        build_model("resnet18", size=64, in_channels=2)


def _small_net() -> nn.Module:
    """A network that is not mirror-invariant itself (a 3×3 kernel, a linear head)."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 1, 3, padding=1),
        nn.Flatten(),
        nn.Linear(32 * 32, 1),
        nn.Flatten(0),
    )


def test_flip_tta_of_a_symmetric_image_equals_the_plain_model() -> None:
    model = _small_net().eval()
    with torch.no_grad():
        x = torch.rand(3, 1, 32, 32)
        assert not torch.allclose(model(x), model(x.flip(-1)))
    half = torch.rand(3, 1, 32, 16)
    symmetric = torch.cat([half, half.flip(-1)], dim=-1)
    tta = FlipTTA(model).eval()
    with torch.no_grad():
        assert torch.allclose(tta(symmetric), model(symmetric), atol=1e-4)
        mean = (torch.sigmoid(model(x)) + torch.sigmoid(model(x.flip(-1)))) / 2
        assert torch.allclose(torch.sigmoid(tta(x)), mean, atol=1e-6)


def test_flip_tta_state_dict_round_trips() -> None:
    tta = FlipTTA(build_model("resnet18", size=32, in_channels=1)).eval()
    state = tta.state_dict()
    assert all(k.startswith("model.") for k in state)
    other = FlipTTA(build_model("resnet18", size=32, in_channels=1)).eval()
    other.load_state_dict(state)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(other(x), tta(x))


def test_ema_update_math() -> None:
    model = nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1))
    ema = ModelEMA(model, decay=0.9, warmup=False)
    assert not any(p.requires_grad for p in ema.module.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model[1].num_batches_tracked.fill_(7)
    ema.update(model)
    after = ema.module.state_dict()
    for key, value in model.state_dict().items():
        if value.dtype.is_floating_point:
            assert torch.allclose(after[key], 0.9 * before[key] + 0.1 * value)
        else:
            assert torch.equal(after[key], value)  # integer buffers are copied
    # the ramped decay: min(decay, (1 + n) / (10 + n))
    ramped = ModelEMA(model, decay=0.99)
    assert ramped.current_decay() == pytest.approx(0.1)
    ramped.update(model)
    assert ramped.current_decay() == pytest.approx(2 / 11)
    ramped.updates = 10_000
    assert ramped.current_decay() == 0.99
    clone = ModelEMA(model)
    clone.load_state_dict(ema.state_dict())
    assert clone.updates == 1 and torch.equal(clone.module[0].weight, ema.module[0].weight)


def test_warmup_then_cosine() -> None:
    model = nn.Linear(3, 1)
    optimizer = adamw(model, lr=1.0, weight_decay=0.05)
    decays = sorted(g["weight_decay"] for g in optimizer.param_groups)
    assert decays == [0.0, 0.05]  # the bias is not decayed
    scheduler = warmup_cosine(optimizer, epochs=5, steps_per_epoch=4, warmup_epochs=1)
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # linear warm-up over 1 epoch
    cosine = [0.5 * (1 + math.cos(math.pi * (step - 4) / 15)) for step in range(4, 20)]
    assert lrs[4:] == pytest.approx(cosine, abs=1e-9)  # then half a cosine to 0 at the end
    assert lrs[-1] == pytest.approx(0.0, abs=1e-9)


def test_augmentation_off_is_the_existing_warp() -> None:
    images = torch.randint(0, 255, (4, 80, 80), dtype=torch.uint8)
    preset = recipe("seed-cnn").override(size=64).train_preset()
    assert (preset.crop_scale, preset.gamma, preset.contrast, preset.channels) == (
        None,
        0.0,
        0.0,
        3,
    )
    out = preset(images, torch.Generator().manual_seed(3))
    # the pre-existing path, step by step: one affine warp from the same draws, normalized
    theta = preset.matrices(4, torch.Generator().manual_seed(3))
    x = images.float().unsqueeze(1) / 255.0
    grid = F.affine_grid(theta, [4, 1, 64, 64], align_corners=False)
    expected = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    assert out.shape == (4, 3, 64, 64)
    assert torch.equal(out, expected.expand(-1, 3, -1, -1))


def test_one_channel_presets() -> None:
    images = torch.randint(0, 255, (2, 40, 40), dtype=torch.uint8)
    preset = TrainPreset(size=32, hflip=True, channels=1, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert preset(images, torch.Generator().manual_seed(0)).shape == (2, 1, 32, 32)
    out = preset.eval_preset()(images)
    assert out.shape == (2, 1, 32, 32)
    assert torch.allclose(out, (EvalPreset(size=32)(images)[:, :1] - 0.5) / 0.25)


def test_full_crop_window_is_the_identity() -> None:
    images = torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8)
    preset = TrainPreset(size=32, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    theta = preset.matrices(3, torch.Generator().manual_seed(0))
    assert torch.allclose(theta, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(3, 2, 3))
    out = preset(images, torch.Generator().manual_seed(0))
    assert torch.allclose(out, EvalPreset(size=32)(images), atol=1e-5)


def test_crop_zooms_in_within_the_image() -> None:
    preset = TrainPreset(size=32, crop_scale=(0.25, 0.5))
    theta = preset.matrices(256, torch.Generator().manual_seed(0))
    width, height = theta[:, 0, 0], theta[:, 1, 1]
    area = width * height
    assert bool(((area >= 0.25 - 1e-6) & (area <= 0.5 + 1e-6)).all())
    # the window never leaves the image: |centre| + half-size <= 1
    assert bool((theta[:, 0, 2].abs() + width <= 1 + 1e-6).all())
    assert bool((theta[:, 1, 2].abs() + height <= 1 + 1e-6).all())


def test_gamma_and_contrast_keep_air_and_range_and_are_seeded() -> None:
    images = torch.randint(0, 255, (16, 32, 32), dtype=torch.uint8)
    images[:, :4] = 0
    preset = TrainPreset(size=32, gamma=0.5)
    a = preset(images, torch.Generator().manual_seed(1))
    assert torch.equal(a, preset(images, torch.Generator().manual_seed(1)))
    assert not torch.allclose(a, EvalPreset(size=32)(images))
    assert float(a[:, :, :4].abs().max()) == 0.0  # air stays black under gamma
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    contrast = TrainPreset(size=32, contrast=0.5)(images, torch.Generator().manual_seed(1))
    assert float(contrast.min()) >= 0.0 and float(contrast.max()) <= 1.0
    with pytest.raises(ValueError):
        TrainPreset(size=32, crop_scale=(0.0, 1.0))
