"""Temperature scaling on a real model: the session's trained CNN made over-confident (its
last layer's logits x4), scored by Ray Data; calibrating on val lowers the test ECE, and a
bundle that carries the temperature scores exactly the calibrated probabilities."""

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
from pipelines.model_store import resolve_model
from pipelines.predict import bundle_bytes, predict_splits
from pipelines.tracking import use_tracking
from pipelines.train.run import calibrated

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
        last.weight.mul_(4.0)
        last.bias.mul_(4.0)
    over = save_bundle(tmp_path / "over", model, dataclasses.replace(info, temperature=1.0))
    before = predict_splits(trained.shards, ("val", "test"), bundle_bytes(over))
    after, temperature = calibrated(before)
    assert temperature > 1.5  # it undoes (most of) the x4
    ece_before, ece_after = study_ece(before["test"]), study_ece(after["test"])
    print(f"temperature {temperature:.2f}, test study ECE {ece_before:.3f} -> {ece_after:.3f}")
    assert ece_after < ece_before
    carried = save_bundle(
        tmp_path / "carried", model, dataclasses.replace(info, temperature=temperature)
    )
    again = predict_splits(trained.shards, ("test",), bundle_bytes(carried))["test"]
    order_a, order_b = np.argsort(again.image_id), np.argsort(before["test"].image_id)
    np.testing.assert_allclose(
        again.prob[order_a],
        apply_temperature(before["test"].prob[order_b], temperature),
        atol=1e-5,
    )
