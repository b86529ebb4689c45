"""The errors of `mura train`."""

from __future__ import annotations

from mura_core.errors import MuraError


class TrainError(MuraError):
    """A whole-run problem found before training, or a training run that failed."""


class TrainCollapsed(TrainError):
    """The chosen model's outputs have no spread: it was not registered."""
