"""Model registry, transforms, checkpoints bundles and class activation maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from mura_core.cam import class_activation_maps, overlay
from mura_core.checkpoints import ModelInfo, load_bundle, save_bundle, save_ensemble
from mura_core.models import SeedCNN, build_model
from mura_core.recipes import recipe
from mura_core.transforms import IMAGENET_MEAN, EvalPreset, TrainPreset


def test_seed_cnn_is_the_papers_network() -> None:
    model = SeedCNN(size=224)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in convs] == [32, 64, 128]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3
    assert [lin.out_features for lin in linears] == [64, 128, 1]
    assert linears[0].in_features == 26 * 26 * 128  # 'valid' padding, as in Keras
    layers = list(model.classifier)
    assert isinstance(layers[-2], nn.Dropout) and layers[-1] is linears[-1]
    assert model(torch.zeros(2, 3, 224, 224)).shape == (2,)


@pytest.mark.parametrize("name", ["densenet169", "resnet18"])
def test_torchvision_backbones_give_one_logit(name: str) -> None:
    model = build_model(name, size=64).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 64, 64)).shape == (2,)


def test_local_imagenet_weights_are_loaded_except_the_head(tmp_path: Path) -> None:
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet18-imagenet.pth")
    model = build_model("resnet18", size=64, weights=tmp_path / "resnet18-imagenet.pth")
    assert torch.equal(model.net.conv1.weight, reference.conv1.weight)
    assert model.net.fc.out_features == 1
    torch.save({"junk": torch.zeros(3)}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="does not fit"):
        build_model("resnet18", size=64, weights=tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="unknown model"):
        build_model("not-a-net", size=64)
    with pytest.raises(ValueError, match="no pretrained"):
        build_model("cnn", size=64, weights=tmp_path / "resnet18-imagenet.pth")


def test_train_preset_is_seeded_by_a_local_generator() -> None:
    images = torch.randint(0, 255, (4, 80, 80), dtype=torch.uint8)
    preset = recipe("seed-cnn").override(size=64).train_preset()
    a = preset(images, torch.Generator().manual_seed(1))
    b = preset(images, torch.Generator().manual_seed(1))
    c = preset(images, torch.Generator().manual_seed(2))
    assert a.shape == (4, 3, 64, 64) and torch.equal(a, b) and not torch.equal(a, c)


def test_flip_only_preset_flips_or_keeps() -> None:
    images = torch.arange(16 * 16, dtype=torch.float32).reshape(1, 1, 16, 16).repeat(8, 1, 1, 1)
    out = TrainPreset(size=16, hflip=True)(images / 255.0, torch.Generator().manual_seed(0))
    plain = EvalPreset(size=16)(images / 255.0)
    mirrored = torch.flip(plain, dims=[-1])
    for i in range(8):
        assert torch.allclose(out[i], plain[i], atol=1e-4) or torch.allclose(
            out[i], mirrored[i], atol=1e-4
        )


def test_eval_preset_normalizes_like_imagenet() -> None:
    out = EvalPreset(size=8, mean=IMAGENET_MEAN, std=(0.229, 0.224, 0.225))(
        torch.full((1, 8, 8), 255, dtype=torch.uint8)
    )
    assert out.shape == (1, 3, 8, 8)
    assert out[0, 0, 0, 0].item() == pytest.approx((1 - 0.485) / 0.229, rel=1e-4)


def test_bundle_round_trip_with_weights_only(tmp_path: Path) -> None:
    model = build_model("cnn", size=32).eval()
    info = ModelInfo.from_recipe(recipe("seed-cnn").override(size=32), threshold=0.42)
    save_bundle(tmp_path / "b", model, info)
    loaded, back = load_bundle(tmp_path / "b")
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x))
    assert back.threshold == pytest.approx(0.42) and back.recipe["name"] == "seed-cnn"
    save_ensemble(tmp_path / "e", [model, build_model("cnn", size=32).eval()], info)
    ensemble, _ = load_bundle(tmp_path / "e")
    with torch.no_grad():
        assert ensemble(x).shape == (3,)


@pytest.mark.parametrize("name", ["cnn", "densenet169"])
def test_cam_shape_range_and_overlay(name: str) -> None:
    model = build_model(name, size=64).eval()
    maps, probs = class_activation_maps(model, torch.rand(2, 3, 64, 64))
    assert maps.shape == (2, 64, 64) and probs.shape == (2,)
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6
    rgb = overlay((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8), maps[0])
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
