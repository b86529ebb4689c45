"""Screening: Ray Data batch inference over whole archives into study-level reports."""

from .models import ScreeningModel, resolve_screening_model
from .nightly import NightlyResult, format_nightly, run_nightly
from .run import ScreenConfig, ScreenError, ScreenResult, format_result, run_screen

__all__ = [
    "NightlyResult",
    "format_nightly",
    "run_nightly",
    "ScreenConfig",
    "ScreenError",
    "ScreenResult",
    "ScreeningModel",
    "format_result",
    "resolve_screening_model",
    "run_screen",
]
