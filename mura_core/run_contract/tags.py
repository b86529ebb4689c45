"""The `mura.*` tags every run carries (`Tag`) and the jobs that log runs (`Job`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: monitor and the Ray Train controller import this
    pass


class Tag:
    """Run tag names (a namespace)."""

    JOB = "mura.job"  # which command logged a screening or feedback run: see `Job`
    PERIOD = "mura.period"  # a feedback period, e.g. 2026-W49
    ALERT = "mura.alert"  # every out-of-band reason on one line; absent when in band
    REFERENCE = "mura.reference"  # "true" / "false": the model carried a reference
    MODEL_VERSION = "mura.model_version"  # `name/version` of each member, " + "-joined
    MODEL_URI = "mura.model_uri"
    MODEL_RUN_ID = "mura.model_run_id"  # each member's training run, ","-joined ("-": none)
    RECIPE = "mura.recipe"
    MODEL = "mura.model"
    BODY_PART = "mura.body_part"
    THRESHOLD_RULE = "mura.threshold_rule"  # how the threshold was chosen on val
    COLLAPSED = "mura.collapsed"  # "true" / "false": the chosen model's outputs
    KIND = "mura.kind"  # a pretraining run: "encoder"
    METHOD = "mura.method"  # a pretraining run: "vicreg"
    GIT_COMMIT = "git_commit"
    MLFLOW_MODEL_HISTORY = "mlflow.log-model.history"  # MLflow 2's record of logged models


class Job:
    """Values of the `mura.job` tag."""

    SCREEN = "screen"
    NIGHTLY = "nightly"
    FEEDBACK = "feedback"


def bool_tag(value: bool) -> str:
    return str(value).lower()


def read_bool(text: str | None) -> bool | None:
    return None if text is None else text == "true"
