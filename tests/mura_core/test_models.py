"""Model registry, initial weights (ImageNet from the torch hub cache, a file, none),
transforms and checkpoint bundles. Class activation maps: test_cam.py."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from mura_core.checkpoints import load_bundle, save_bundle, save_ensemble
from mura_core.errors import MuraError
from mura_core.initial_weights import WeightsError, initial_weights
from mura_core.model_info import ModelInfo
from mura_core.models import SeedCNN, build_model
from mura_core.recipes import RECIPES, recipe
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
    with pytest.raises(WeightsError, match="does not fit"):
        build_model("resnet18", size=64, weights=tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="unknown model"):
        build_model("not-a-net", size=64)
    with pytest.raises(WeightsError, match="no pretrained"):
        build_model("cnn", size=64, weights=tmp_path / "resnet18-imagenet.pth")


DENSENET_FILE = "densenet169-b2777c0a.pth"  # torchvision's IMAGENET1K_V1 file name


def _offline(monkeypatch: pytest.MonkeyPatch, torch_home: Path) -> None:
    """A private torch hub cache, and every HTTPS request sent to a closed local port, so a
    download fails at once even on a machine with a network."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy"):
        monkeypatch.setenv(var, closed)
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)


def test_imagenet_weights_come_from_the_torch_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _offline(monkeypatch, tmp_path / "torch")
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    reference = torchvision.models.densenet169(weights=None)  # torchvision's own key names
    torch.save(reference.state_dict(), cache / DENSENET_FILE)
    init = initial_weights("imagenet", "densenet169")
    assert init.label == "imagenet (DenseNet169_Weights.IMAGENET1K_V1)"
    model = build_model("densenet169", size=64, weights=init.state)
    assert torch.equal(model.net.features.conv0.weight, reference.features.conv0.weight)
    norm = model.net.features.denseblock4.denselayer32.norm2
    assert torch.equal(
        norm.running_var, reference.features.denseblock4.denselayer32.norm2.running_var
    )
    assert model.net.classifier.out_features == 1  # the ImageNet head is left out


def test_missing_imagenet_weights_fail_with_one_line_saying_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _offline(monkeypatch, tmp_path / "torch")
    with pytest.raises(WeightsError) as caught:
        initial_weights("imagenet", "densenet169")
    message = str(caught.value)
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    assert "\n" not in message and isinstance(caught.value, MuraError)
    for part in (
        DENSENET_FILE,
        str(cache),
        f"https://download.pytorch.org/models/{DENSENET_FILE}",
        "--weights FILE",
        "--weights none",
    ):
        assert part in message, (part, message)
    assert not any(cache.glob("*.pth"))  # no partial download left behind


def test_weights_none_a_file_and_the_cnn(tmp_path: Path) -> None:
    none = initial_weights("none", "densenet169")
    assert none.label == "none (random init)" and none.state is None
    assert initial_weights("none", "cnn").state is None
    with pytest.raises(WeightsError, match="seed CNN has no pretrained weights.*--weights none"):
        initial_weights("imagenet", "cnn")
    reference = torchvision.models.densenet169(weights=None).state_dict()
    # torchvision's older files name DenseNet layers 'norm.1'; they are remapped to 'norm1'
    old_names = {
        k.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v
        for k, v in reference.items()
    }
    torch.save(old_names, tmp_path / "mine.pth")
    init = initial_weights(str(tmp_path / "mine.pth"), "densenet169")
    assert init.label.startswith("file mine.pth sha256 ") and len(init.label.split()[-1]) == 16
    key = "features.denseblock1.denselayer1.norm1.weight"
    assert torch.equal(init.state[key], reference[key])
    with pytest.raises(WeightsError, match="weights file not found"):
        initial_weights(str(tmp_path / "absent.pth"), "densenet169")
    (tmp_path / "junk.pth").write_bytes(b"not a state dict")
    with pytest.raises(WeightsError, match="not a readable state_dict"):
        initial_weights(str(tmp_path / "junk.pth"), "densenet169")


def test_the_densenet_recipes_start_from_imagenet_and_the_cnn_from_random() -> None:
    assert recipe("seed-densenet").weights == "imagenet"
    assert recipe("mura-paper").weights == "imagenet"
    assert recipe("seed-cnn").weights == "none"


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
    assert back.threshold == pytest.approx(0.42) and back.recipe.name == "seed-cnn"
    other = build_model("cnn", size=32).eval()
    save_ensemble(tmp_path / "e", [model, other], info)
    ensemble, _ = load_bundle(tmp_path / "e")
    with torch.no_grad():
        mean = (torch.sigmoid(model(x)) + torch.sigmoid(other(x))) / 2
        assert torch.allclose(torch.sigmoid(ensemble(x)), mean, atol=1e-6)


def test_the_model_carries_its_temperature_and_per_part_thresholds(tmp_path: Path) -> None:
    model = build_model("cnn", size=32).eval()
    info = ModelInfo.from_recipe(
        recipe("seed-cnn").override(size=32),
        threshold=0.42,
        temperature=2.5,
        part_thresholds={"XR_FINGER": 0.31},
    )
    _, back = load_bundle(save_bundle(tmp_path / "b", model, info))
    assert (back.temperature, back.part_thresholds) == (2.5, {"XR_FINGER": 0.31})
    assert back.threshold_for("XR_FINGER") == 0.31 and back.threshold_for("XR_WRIST") == 0.42
    plain_info = ModelInfo.from_recipe(recipe("seed-cnn").override(size=32))
    _, plain = load_bundle(save_bundle(tmp_path / "p", model, plain_info))
    assert plain.temperature == 1.0 and plain.part_thresholds is None


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_builds_and_runs_from_64_px_up(name: str) -> None:
    """A site may screen thumbnails: each recipe's network, fed by its own presets, gives
    one logit per image at 64 px (and at the recipe's own size the model is the same)."""
    r = recipe(name).override(size=64, weights="none")
    model = build_model(r.model, size=r.size, in_channels=r.in_channels).eval()
    pixels = torch.randint(0, 255, (2, 64, 64), dtype=torch.uint8)
    x = r.train_preset()(pixels, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert model(x).shape == (2,)
        assert model(r.train_preset().eval_preset()(pixels)).shape == (2,)
