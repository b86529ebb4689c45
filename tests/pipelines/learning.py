"""The CI learning configuration, in one place: the session's trained model
(tests/pipelines/conftest.py `trained`) and `bench/learn.py`, which repeats it over seeds.

Forearm studies with bold signs (sign strength 4) ingested at 64 px, the seed CNN recipe at
64 px with flips only: the CI-sized version of what `mura train` does.
"""

from __future__ import annotations

from mura_core.body_parts import BodyPart
from mura_core.recipes import Recipe, recipe
from mura_core.synth import SynthConfig

ARCHIVE = SynthConfig(
    studies=600, seed=5, size=160, sign_strength=4.0, body_parts=(BodyPart.FOREARM,)
)
SHARD_SIZE = 64


def ci_recipe() -> Recipe:
    """The seed CNN as CI trains it (learned = study-level test AUROC >= 0.9)."""
    return (
        recipe("seed-cnn").override(size=SHARD_SIZE, batch_size=32, epochs=24).with_augment("flips")
    )
