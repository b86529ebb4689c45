"""Class activation maps: one implementation for single models and ensembles, batched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mura_core.cam import class_activation_maps, overlay, overlay_png
from mura_core.checkpoints import Ensemble as ReExported
from mura_core.models import Ensemble, build_model


def _seeded(name: str, seed: int, size: int = 64) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(name, size=size).eval()


@pytest.mark.parametrize("name", ["cnn", "densenet169"])
def test_cam_shape_range_and_overlay(name: str) -> None:
    model = _seeded(name, 0)
    maps, probs = class_activation_maps(
        model, torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    )
    assert maps.shape == (2, 64, 64) and probs.shape == (2,)
    assert maps.min() >= 0
    for peak in maps.reshape(2, -1).max(axis=1):  # each map by its own peak (0: nothing seen)
        assert peak == pytest.approx(1.0, abs=1e-6) or peak == 0
    rgb = overlay((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8), maps[0])
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    assert overlay_png(rgb[..., 0], maps[1]).startswith(b"\x89PNG")


def test_densenet_map_is_the_classic_cam_and_probabilities_are_the_models() -> None:
    """DenseNet: global average pooling + one linear layer, so Grad-CAM equals Zhou et al.'s
    CAM: ReLU(sum_c w_c A_c) of the ReLU'd last features, w the classifier's weights."""
    model = _seeded("densenet169", 1)
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    maps, probs = class_activation_maps(model, x)
    with torch.no_grad():
        features = F.relu(model.net.features(x))
        weights = model.net.classifier.weight[0]
        cam = F.relu(torch.einsum("c,bchw->bhw", weights, features))[:, None]
        cam = F.interpolate(cam, size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
        expected = cam / cam.flatten(1).max(1).values.view(-1, 1, 1)
        expected_probs = torch.sigmoid(model(x))
    np.testing.assert_allclose(maps, expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(probs, expected_probs.numpy(), atol=1e-6)


def test_batches_give_the_same_maps_and_leave_the_model_as_it_was() -> None:
    model = _seeded("cnn", 2).train()
    x = torch.rand(7, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    whole, p_whole = class_activation_maps(model, x, batch_size=7)
    ones, p_ones = class_activation_maps(model, x, batch_size=1)
    threes, _ = class_activation_maps(model, x, batch_size=3)
    np.testing.assert_allclose(whole, ones, atol=1e-5)
    np.testing.assert_allclose(whole, threes, atol=1e-5)
    np.testing.assert_allclose(p_whole, p_ones, atol=1e-6)
    assert model.training  # mode restored
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    empty, no_probs = class_activation_maps(model, x[:0])
    assert empty.shape == (0, 64, 64) and no_probs.shape == (0,)


def test_an_ensemble_map_is_the_mean_of_its_members_normalised_maps() -> None:
    assert ReExported is Ensemble  # still importable from mura_core.checkpoints
    a, b, c = _seeded("cnn", 3), _seeded("cnn", 4), _seeded("cnn", 5)
    x = torch.rand(5, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    singles = [class_activation_maps(m, x) for m in (a, b, c)]
    ensemble = Ensemble([a, b, c]).eval()
    maps, probs = class_activation_maps(ensemble, x, batch_size=2)
    # maps in [0, 1], float32: the ensemble's and the members' sums round differently
    np.testing.assert_allclose(maps, np.mean([m for m, _ in singles], axis=0), atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(probs, torch.sigmoid(ensemble(x)).numpy(), atol=1e-6)
    assert not np.allclose(singles[0][0], singles[1][0])  # members differ: a real mean
    # nested (screening several ensemble bundles together): mean of the members' means
    nested, nested_probs = class_activation_maps(Ensemble([ensemble, a]).eval(), x)
    np.testing.assert_allclose(nested, (maps + singles[0][0]) / 2, atol=1e-5)
    np.testing.assert_allclose(nested_probs, (probs + singles[0][1]) / 2, atol=1e-6)
