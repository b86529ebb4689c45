"""The MLflow run contract: every tag, param and metric name the project logs, and the typed
records that write them and read them back.

MLflow stores flat strings and numbers; everything else in the project passes the frozen
records below. A writer turns a record into the flat dicts MLflow takes (`to_tags`,
`to_params`, `to_metrics`); a reader turns what a run holds back into a record
(`from_run(metrics, tags, params)`). No MLflow import here: the calls stay in `pipelines`.
The names are those runs have always been logged with, so existing stores and registered
models read as before (`tests/mura_core/test_run_contract.py` pins them).

1. The Ray Train report row (`reports`: `EpochReport`; `PretrainEpochReport` for `mura
   pretrain`): what a worker hands `ray.train.report` every epoch, a flat dict of numbers at
   Ray's boundary (`to_dict` / `from_dict`), logged by the controller callback with
   `step=epoch` under its field names (`train_loss`, `val_loss`, `val_study_auroc`, …;
   `to_metrics`), and kept in a checkpoint's `history.json`.
2. A training run (`train`; `mura train`, experiment `mura-train`): opened with
   `TrainRunParams` (tags `mura.recipe`, `mura.model`, `mura.body_part`; params `recipe`,
   `model`, `body_part`, `recipe.<field>`, `seed`, `data.*`, …); once the model is chosen,
   the tags `mura.threshold_rule` and `mura.collapsed` and the metric `val.logit_std`; then
   the evaluation (`evaluation_metrics`: `<split>.<image|study>.<figure>[.<BODY_PART>]`,
   `<split>.threshold[.<BODY_PART>]`), calibration (`ece_metric`, `calibration.temperature`)
   and the validation reference (`reference_metrics`: `reference.*`). `mura compare` reads a
   run back as a `TrainRunRecord`. A pretraining run (`mura pretrain`) is tagged with
   `pretrain_tags` (`mura.kind`, `mura.method`, `mura.model`).
3. The model versions registered from a run carry `ModelVersionTags` (`threshold`, `run_id`,
   `body_part`, `seed`; an encoder's `kind` and `method`).
4. A screening run (`screen`; `mura screen` and `mura nightly`, experiment `mura-screen`): a
   `ScreenRunRecord` — tags `mura.job`, the model's identity (`mura.model_version`,
   `mura.model_uri`, `mura.model_run_id`), `git_commit`, and, when monitored,
   `mura.reference` and `mura.alert`; params `ScreenRunParams` (`source.*`, `model.*`,
   `threshold`, `batch_size`, `gpus`); metrics the counts (`studies`, `images`, `flagged`,
   …), the monitoring figures (their flat names: `flag_rate`, `flag_rate.<BODY_PART>`,
   `score.p50`, `drift.score_psi`, …, see `mura_core.screen_summary.MonitoringSummary`),
   `write_back.*` (`WriteBackCounts`: studies, failed, outbox_pending, and the objects stored
   by kind: reports, captures, heatmaps, key_objects, versions) and `notify.*`
   (`NotifyCounts`: notices told the worklist), counts only, never which or whom.
   `mura monitor` reads runs back with `ScreenRunRecord.from_run`.
5. A feedback period (`feedback`; `mura feedback`, experiment `mura-monitor`): a
   `FeedbackPeriod` — tags `mura.job = feedback`, `mura.period`, `mura.alert` when out of
   band; metrics `realized.studies` and `realized.<figure>[_ci_low|_ci_high][.<BODY_PART>]`.
   `mura monitor` reads them back with `FeedbackPeriod.from_run`."""

from __future__ import annotations

from mura_core.run_contract.feedback import REALIZED, FeedbackPeriod
from mura_core.run_contract.reports import EpochReport, PretrainEpochReport
from mura_core.run_contract.screen import (
    COUNT_METRICS,
    FLAG_RATE,
    RATE_METRICS,
    NotifyCounts,
    ScreenRunParams,
    ScreenRunRecord,
    WriteBackCounts,
    part_flag_rates,
)
from mura_core.run_contract.tags import Job, Tag, bool_tag, read_bool
from mura_core.run_contract.train import (
    CALIBRATION_TEMPERATURE,
    SPLITS,
    VAL_LOGIT_STD,
    ModelVersionTags,
    TrainRunParams,
    TrainRunRecord,
    ci_names,
    ece_metric,
    evaluation_metrics,
    logged_ci,
    metric_name,
    operating_tags,
    pretrain_tags,
    reference_metrics,
)

__all__ = [
    "CALIBRATION_TEMPERATURE",
    "COUNT_METRICS",
    "EpochReport",
    "FLAG_RATE",
    "FeedbackPeriod",
    "Job",
    "ModelVersionTags",
    "NotifyCounts",
    "PretrainEpochReport",
    "RATE_METRICS",
    "REALIZED",
    "SPLITS",
    "ScreenRunParams",
    "ScreenRunRecord",
    "Tag",
    "TrainRunParams",
    "TrainRunRecord",
    "VAL_LOGIT_STD",
    "WriteBackCounts",
    "bool_tag",
    "ci_names",
    "ece_metric",
    "evaluation_metrics",
    "logged_ci",
    "metric_name",
    "operating_tags",
    "part_flag_rates",
    "pretrain_tags",
    "read_bool",
    "reference_metrics",
]
