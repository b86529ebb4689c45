"""Temperature scaling on real models scored by Ray Data.

The session's trained CNN with its last layer's logits x20: the temperature fitted on val
undoes much of it, and a bundle that carries the temperature scores exactly the calibrated
probabilities. (Its test errors are few, so over-confidence costs it little ECE.) A model
with no skill made sure of itself (a random-init CNN, logits x1000): calibrating on val
lowers its test ECE by more than half."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
from torch import nn

from mura_core.calibration import apply_temperature, reliability
from mura_core.checkpoints import load_bundle, save_bundle
from mura_core.model_info import ModelInfo
from mura_core.models import build_model
from mura_core.recipes import recipe
from pipelines.registry.model_store import resolve_model
from pipelines.registry.tracking import use_tracking
from pipelines.shards.predict import bundle_bytes, predict_splits
from pipelines.train.operating import calibrated
from tests.pipelines import learning

if TYPE_CHECKING:
    from tests.pipelines.conftest import Trained

pytestmark = pytest.mark.usefixtures("ray_local")


def study_ece(pred) -> float:
    studies = pred.studies()
    known = studies.label >= 0
    return reliability(studies.label[known], studies.prob[known]).ece


def test_calibrating_an_over_confident_model_lowers_its_test_ece(
    trained: Trained, tmp_path: Path
) -> None:
    use_tracking(trained.uri)
    model, info = load_bundle(resolve_model(trained.result.model_uri, cache=tmp_path).folder)
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(20.0)
        last.bias.mul_(20.0)
    over = save_bundle(tmp_path / "over", model, dataclasses.replace(info, temperature=1.0))
    before = predict_splits(trained.shards, ("val", "test"), bundle_bytes(over))
    after, temperature = calibrated(before)
    assert temperature > 3  # it undoes much of the x20
    ece_before, ece_after = study_ece(before["test"]), study_ece(after["test"])
    print(f"trained x20: T {temperature:.2f}, test study ECE {ece_before:.3f} -> {ece_after:.3f}")
    carried = save_bundle(
        tmp_path / "carried", model, dataclasses.replace(info, temperature=temperature)
    )
    again = predict_splits(trained.shards, ("test",), bundle_bytes(carried))["test"]
    order_a, order_b = np.argsort(again.image_id), np.argsort(before["test"].image_id)
    raw = before["test"].prob[order_b]
    # where a probability still holds its logit (x20 saturates some to 0 or 1 in float64),
    # the bundle's T on the logits equals T applied afterwards to the probabilities
    kept = (raw > 1e-14) & (raw < 1 - 1e-14)
    assert kept.sum() >= 10
    np.testing.assert_allclose(
        again.prob[order_a][kept], apply_temperature(raw[kept], temperature), atol=1e-6
    )


def test_calibrating_a_sure_model_without_skill_lowers_its_test_ece(
    trained: Trained, tmp_path: Path
) -> None:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("cnn", size=learning.SHARD_SIZE)
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(1000.0)
        last.bias.mul_(1000.0)
    info = ModelInfo.from_recipe(recipe("seed-cnn").override(size=learning.SHARD_SIZE))
    sure = save_bundle(tmp_path / "sure", model, info)
    before = predict_splits(trained.shards, ("val", "test"), bundle_bytes(sure))
    after, temperature = calibrated(before)
    ece_before, ece_after = study_ece(before["test"]), study_ece(after["test"])
    print(f"random x1000: T {temperature:.2f}, test study ECE {ece_before:.3f} -> {ece_after:.3f}")
    assert ece_before > 0.2 and ece_after < ece_before / 2
