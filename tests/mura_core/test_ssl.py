"""VICReg's loss, its two views, and the encoder's tensors as `--weights FILE` takes them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mura_core.checkpoints import load_bundle, save_bundle
from mura_core.initial_weights import initial_weights
from mura_core.model_info import ModelInfo, ModelOrigin
from mura_core.models import build_model
from mura_core.ssl import (
    ENCODER_KIND,
    GRAY_MEAN,
    GRAY_STD,
    build_ssl_model,
    embedding_std,
    encoder_state,
    is_encoder,
    placeholder_classifier,
    remove_head,
    ssl_preset,
    two_views,
    vicreg_loss,
)


def _spread(n: int = 64, d: int = 16, seed: int = 0) -> torch.Tensor:
    """Independent standard-normal dimensions scaled to std 2: above VICReg's γ = 1."""
    return 2 * torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_identical_spread_views_cost_only_their_small_covariance() -> None:
    z = _spread(n=4096)
    terms = vicreg_loss(z, z.clone())
    assert terms.invariance.item() == 0.0
    assert terms.variance.item() == 0.0  # every dimension's std ≈ 2 ≥ γ
    # independent dimensions: each off-diagonal covariance² ~ σ⁴/n, d(d−1) of them ÷ d,
    # two branches: 2·(d − 1)·16/n ≈ 0.12 — small, and shrinking with the batch
    assert terms.covariance.item() < 0.2
    assert terms.loss.item() == pytest.approx(terms.covariance.item())


def test_collapsed_embeddings_pay_the_whole_variance_hinge() -> None:
    same = torch.ones(32, 8) * 3.0  # every image the same embedding
    terms = vicreg_loss(same, same.clone())
    assert terms.invariance.item() == 0.0 and terms.covariance.item() == 0.0
    assert terms.variance.item() == pytest.approx(1 - 1e-2, abs=1e-6)  # 1 − sqrt(ε)
    assert terms.loss.item() == pytest.approx(25 * (1 - 1e-2), abs=1e-4)
    assert embedding_std(same) == pytest.approx(0.0, abs=1e-6)
    assert embedding_std(_spread()) > 0.1


def test_invariance_is_the_mse_between_views_and_correlated_dimensions_cost() -> None:
    z = _spread()
    shifted = z + 0.5
    assert vicreg_loss(z, shifted).invariance.item() == pytest.approx(0.25)
    base = _spread(d=1)
    correlated = torch.cat([base, base, base, base], dim=1)  # four copies of one dimension
    independent = _spread(d=4, seed=1)
    assert (
        vicreg_loss(correlated, correlated).covariance.item()
        > 10 * vicreg_loss(independent, independent).covariance.item()
    )


def test_the_loss_pushes_a_collapsing_batch_apart() -> None:
    z = (torch.ones(16, 4) + 1e-3 * _spread(16, 4)).requires_grad_(True)
    vicreg_loss(z, z.detach().clone()).loss.backward()
    stepped = (z - 0.1 * z.grad).detach()
    assert stepped.std(dim=0).mean() > z.detach().std(dim=0).mean()


def test_a_batch_of_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2 images"):
        vicreg_loss(torch.ones(1, 4), torch.ones(1, 4))


def test_two_views_come_from_train_preset_and_differ() -> None:
    images = torch.randint(0, 256, (6, 48, 48), dtype=torch.uint8)
    preset = ssl_preset(32)
    v1, v2 = two_views(preset, images, torch.Generator().manual_seed(0))
    assert v1.shape == v2.shape == (6, 1, 32, 32)
    assert not torch.equal(v1, v2)
    again = two_views(preset, images, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], v1) and torch.equal(again[1], v2)  # seeded, local generator
    assert preset.crop_scale is not None and preset.hflip and not preset.vflip
    assert preset.mean == GRAY_MEAN and preset.std == GRAY_STD


def test_the_ssl_model_is_a_headless_backbone_and_a_projector() -> None:
    torch.manual_seed(0)
    model = build_ssl_model("resnet18", size=32, projector_dim=64)
    assert model.encoder.in_channels == 1
    with torch.no_grad():
        assert model.encoder(torch.zeros(3, 1, 32, 32)).shape == (3, 512)
        assert model(torch.zeros(3, 1, 32, 32)).shape == (3, 64)
    with pytest.raises(Exception, match="seed CNN"):
        build_ssl_model("cnn", size=32)


@pytest.mark.parametrize("in_channels", [1, 3])
def test_encoder_state_is_what_weights_file_loads_and_computes_the_same(
    tmp_path: Path, in_channels: int
) -> None:
    """The exported tensors, through the `--weights FILE` path, give a classifier (3- or
    1-channel) whose features are the pretrained encoder's on the same gray images."""
    torch.manual_seed(0)
    model = build_ssl_model("resnet18", size=32, projector_dim=64).eval()
    for module in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    state = encoder_state(model)
    assert "conv1.weight" in state and state["conv1.weight"].shape == (64, 3, 7, 7)
    assert not any(k.startswith(("fc.", "net.", "projector")) for k in state)
    path = tmp_path / "encoder.pt"
    torch.save(state, path)
    loaded = initial_weights(str(path), "resnet18")
    assert loaded.label.startswith("file encoder.pt sha256 ")
    assert set(loaded.state) == set(state)  # every tensor fits; only the head is new
    classifier = build_model(
        "resnet18", size=32, weights=loaded.state, in_channels=in_channels
    ).eval()
    remove_head(classifier)
    gray = torch.rand(4, 1, 32, 32)
    x = gray.expand(-1, 3, -1, -1) if in_channels == 3 else gray
    with torch.no_grad():
        assert torch.allclose(classifier(x), model.encoder(gray), atol=1e-4)


def test_an_encoder_bundle_loads_as_a_bundle_and_says_it_is_an_encoder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = encoder_state(build_ssl_model("resnet18", size=32, projector_dim=64))
    placeholder = placeholder_classifier("resnet18", size=32, state=state)
    info = ModelInfo(
        model="resnet18",
        size=32,
        mean=GRAY_MEAN,
        std=GRAY_STD,
        extra={"kind": ENCODER_KIND, "method": "vicreg"},
    )
    save_bundle(tmp_path / "bundle", placeholder, info)
    model, read = load_bundle(tmp_path / "bundle")
    assert is_encoder(read.extra) and read.extra.method == "vicreg"
    assert not is_encoder(ModelOrigin()) and not is_encoder(None)
    with torch.no_grad():
        assert torch.all(model(torch.rand(2, 3, 32, 32)) == 0)  # a placeholder head: 0.5
    own = model.state_dict()
    assert all(torch.equal(own[f"net.{k}"], v) for k, v in state.items())
