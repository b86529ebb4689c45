"""The MLflow run contract pinned: the tag, param and metric names runs have always been
logged with (existing stores and registered models must still read), and the records'
round trips through the flat dicts MLflow takes and gives back."""

from __future__ import annotations

import dataclasses
import math

import pytest

from mura_core.metrics import evaluate
from mura_core.monitoring.feedback import Estimate
from mura_core.monitoring.snapshot import Snapshot
from mura_core.notify.summary import NotifyFailure, NotifySummary
from mura_core.recipes import Recipe, recipe
from mura_core.run_contract import (
    EpochReport,
    FeedbackPeriod,
    ModelVersionTags,
    PretrainEpochReport,
    ScreenRunParams,
    ScreenRunRecord,
    Tag,
    TrainRunParams,
    TrainRunRecord,
    WriteBackCounts,
    ci_names,
    ece_metric,
    evaluation_metrics,
    operating_tags,
    pretrain_tags,
    reference_metrics,
)
from mura_core.screen_summary import (
    ModelSummary,
    MonitoringSummary,
    ScreenCounts,
    ScreenSummary,
    SourceSummary,
    WriteBackFailure,
    WriteBackSummary,
)


def test_tag_names_are_those_runs_were_always_tagged_with() -> None:
    names = {k: v for k, v in vars(Tag).items() if k.isupper()}
    assert names == {
        "JOB": "mura.job",
        "PERIOD": "mura.period",
        "ALERT": "mura.alert",
        "REFERENCE": "mura.reference",
        "MODEL_VERSION": "mura.model_version",
        "MODEL_URI": "mura.model_uri",
        "MODEL_RUN_ID": "mura.model_run_id",
        "RECIPE": "mura.recipe",
        "MODEL": "mura.model",
        "BODY_PART": "mura.body_part",
        "THRESHOLD_RULE": "mura.threshold_rule",
        "COLLAPSED": "mura.collapsed",
        "KIND": "mura.kind",
        "METHOD": "mura.method",
        "GIT_COMMIT": "git_commit",
        "MLFLOW_MODEL_HISTORY": "mlflow.log-model.history",
    }


def train_params(body_part: str | None = None) -> TrainRunParams:
    return TrainRunParams(
        recipe=recipe("seed-cnn"),
        body_part=body_part,
        workers=2,
        gpu=False,
        weights="none (random init)",
        target_sensitivity=None,
        seed=7,
        max_failures=2,
        manifest_digest="abc",
        shard_size=64,
        images={"train": 10, "val": 4, "test": 5},
        git_commit="deadbeef",
        tool_version="0.1.0",
        ray_train_name="seed-cnn-cnn-x",
    )


def test_a_training_run_opens_with_todays_tags_and_params() -> None:
    params = train_params()
    assert params.to_tags() == {
        "mura.recipe": "seed-cnn",
        "mura.model": "cnn",
        "mura.body_part": "all",
    }
    logged = params.to_params()
    fields = {f"recipe.{f.name}" for f in dataclasses.fields(Recipe)}
    assert set(logged) - fields == {
        "recipe",
        "model",
        "body_part",
        "workers",
        "gpu",
        "weights",
        "target_sensitivity",
        "seed",
        "max_failures",
        "data.manifest_digest",
        "data.shard_size",
        "git_commit",
        "tool_version",
        "ray_train_name",
        "data.train_images",
        "data.val_images",
        "data.test_images",
    }
    assert fields <= set(logged)
    assert (
        logged["recipe.batch_size"] == str(recipe("seed-cnn").batch_size)
        and logged["recipe.betas"] == "(0.9, 0.999)"
    )
    assert logged["target_sensitivity"] == "none" and logged["gpu"] == "False"
    assert logged["data.val_images"] == "4" and logged["seed"] == "7"
    assert train_params("XR_WRIST").to_params()["body_part"] == "XR_WRIST"
    assert operating_tags("youden", False) == {
        "mura.threshold_rule": "youden",
        "mura.collapsed": "false",
    }
    assert operating_tags(None, True) == {"mura.collapsed": "true"}
    assert pretrain_tags("encoder", "vicreg", "resnet18") == {
        "mura.kind": "encoder",
        "mura.method": "vicreg",
        "mura.model": "resnet18",
    }


def small_evaluation():
    keys = ["w1", "w1", "w2", "h1", "h2", "h3"]
    probs = [0.9, 0.7, 0.1, 0.6, 0.2, 0.4]
    labels = [1, 1, 0, 1, None, 0]
    parts = ["XR_WRIST"] * 3 + ["XR_HAND"] * 3
    return evaluate(keys, probs, labels, parts, 0.5, part_thresholds={"XR_HAND": 0.45})


def test_evaluation_metric_names_are_pinned() -> None:
    test = evaluation_metrics(small_evaluation(), "test")
    figures = ("accuracy", "auroc", "kappa", "kappa_ci_high", "kappa_ci_low", "n")
    figures += ("sensitivity", "specificity")
    expected = {
        f"test.{level}.{name}{part}"
        for level in ("image", "study")
        for name in figures
        for part in ("", ".XR_HAND", ".XR_WRIST")
    }
    defined = {k for k in expected if k in test}
    assert set(test) - expected == {"test.threshold", "test.threshold.XR_HAND"}
    assert {"test.study.kappa", "test.study.kappa.XR_WRIST", "test.image.n"} <= defined
    assert test["test.threshold"] == 0.5 and test["test.threshold.XR_HAND"] == 0.45
    val = evaluation_metrics(small_evaluation(), "val", by_part=False)
    # train and val: the overall figures and, as always, the per-part thresholds only
    assert {k for k in val if k.count(".") != 2} == set()
    assert "val.threshold.XR_HAND" in val and "val.threshold" not in val
    assert "val.study.kappa" in val and "val.study.kappa.XR_WRIST" not in val
    assert ece_metric("val") == "val.study.ece"
    assert ece_metric("test", uncalibrated=True) == "test.study.ece_uncalibrated"
    assert ci_names("test.study.kappa.XR_WRIST") == (
        "test.study.kappa_ci_low.XR_WRIST",
        "test.study.kappa_ci_high.XR_WRIST",
    )


def test_reference_metric_names_are_pinned() -> None:
    snapshot = Snapshot((0.1, 0.5, 0.9), 0.5, 0.3, 3, {"XR_HAND": 3}, None, 0.8, 0.6)
    names = set(reference_metrics(snapshot))
    assert {"reference.studies", "reference.flag_rate", "reference.sensitivity"} <= names
    assert "reference.sensitivity_ci_low" in names and "reference.score_p50" in names


def test_a_training_run_reads_back_params_first_then_its_older_tags() -> None:
    metrics = {"test.study.kappa": 0.7, "test.study.kappa.XR_HAND": 0.6, "test.threshold": 0.4}
    metrics |= {"test.study.kappa_ci_low": 0.6, "test.study.kappa_ci_high": 0.8}
    tags = {"mura.model": "densenet169", "mura.recipe": "old", "mura.body_part": "all"}
    record = TrainRunRecord.from_run(metrics, tags, {"model": "cnn", "seed": "3"})
    assert (record.model, record.recipe, record.body_part, record.seed) == (
        "cnn",
        "old",
        "all",
        "3",
    )
    assert record.figure("test", "study", "kappa") == 0.7
    assert record.ci("test.study.kappa") == (0.6, 0.8)
    assert record.by_part("test", "study", "kappa") == {"XR_HAND": 0.6}
    assert record.threshold == 0.4


def test_model_version_tags_are_pinned() -> None:
    tags = ModelVersionTags(run_id="r1", seed="0", body_part="all").to_tags()
    assert tags == {"run_id": "r1", "body_part": "all", "seed": "0"}
    encoder = ModelVersionTags(run_id="r2", seed="1", kind="encoder", method="vicreg")
    assert encoder.to_tags() == {"run_id": "r2", "kind": "encoder", "method": "vicreg", "seed": "1"}
    assert ModelVersionTags("r3", threshold=0.25).to_tags() == {"threshold": "0.25", "run_id": "r3"}


# what today's loop reports on rank 0 and another rank, and a history.json row
RANK0 = {
    "epoch": 3,
    "lr": 0.001,
    "train_loss": 0.6,
    "train_accuracy": 0.7,
    "val_loss": 0.5,
    "val_accuracy": 0.75,
    "val_logit_std": 0.9,
    "val_collapsed": 0.0,
    "val_study_auroc": 0.8,
    "epoch_seconds": 12.5,
}
RANK1 = {"epoch": 3, "lr": 0.001, "train_loss": 0.6, "train_accuracy": 0.7, "epoch_seconds": 12.0}


def test_the_train_report_row_is_todays_flat_dict_of_numbers() -> None:
    report = EpochReport.from_dict(RANK0)
    assert report.epoch == 3 and report.val_collapsed is False and report.val_study_auroc == 0.8
    assert report.to_dict() == RANK0
    assert EpochReport.from_dict(RANK1).to_dict() == RANK1
    assert EpochReport.from_dict(RANK1).val_loss is None
    logged = report.to_metrics()
    assert set(logged) == set(RANK0) - {"epoch"} and logged["val_collapsed"] == 0.0
    diverged = dataclasses.replace(report, val_loss=math.nan)
    assert "val_loss" not in diverged.to_metrics()
    assert EpochReport.from_dict({**RANK0, "val_collapsed": 1.0}).collapsed
    assert EpochReport.from_dict({**RANK1, "from_ray": 1}).to_dict() == RANK1


def test_the_pretrain_report_row_is_todays_flat_dict_of_numbers() -> None:
    row = {"epoch": 2, "lr": 1e-3, "loss": 21.0, "invariance": 0.5, "variance": 0.4}
    row |= {"covariance": 0.1, "embedding_std": 0.05, "steps": 4.0, "epoch_seconds": 3.0}
    report = PretrainEpochReport.from_dict(row)
    assert report.to_dict() == row and report.loss == 21.0
    assert set(report.to_metrics()) == set(row) - {"epoch"}
    assert PretrainEpochReport.STEP_METRIC == "loss" and EpochReport.STEP_METRIC == "train_loss"


def screen_summary(
    *, monitored: bool = True, written_back: bool = True, told: bool = True
) -> ScreenSummary:
    monitoring = MonitoringSummary(
        True, {"flag_rate": 0.3, "flag_rate.XR_HAND": 0.25, "drift.score_psi": 0.1}, ("a", "b")
    )
    write_back = WriteBackSummary(
        "orthanc",
        studies=4,
        reports=3,
        captures=2,
        failed=(WriteBackFailure("k", "refused"),),
        heatmaps=2,
        key_objects=1,
        versions=1,
    )
    return ScreenSummary(
        screened_at="2026-12-01T02:00:00Z",
        source=SourceSummary("dicom", "d1"),
        model=ModelSummary("models:/mura-cnn/3", "mura-cnn", "3", "cnn", 64),
        threshold=0.4,
        counts=ScreenCounts(studies=10, images=30, flagged=3, quarantined=1),
        job="nightly",
        images_per_s=5.0,
        seconds=6.0,
        resumed=2,
        write_back=write_back if written_back else None,
        monitoring=monitoring if monitored else None,
        notify=NotifySummary(
            "mllp://ris:2575",
            sent=7,
            queued=2,
            resent=1,
            already_sent=3,
            pending=2,
            failures=(NotifyFailure("k", "AE: refused"),) * 2,
        )
        if told
        else None,
    )


IDENTITY = {
    "model_versions": "mura-cnn/3",
    "model_uri": "models:/mura-cnn/3",
    "model_run_ids": "r1",
    "git_commit": "deadbeef",
}


def test_a_screening_run_is_logged_with_todays_names() -> None:
    record = ScreenRunRecord.of(screen_summary(), **IDENTITY)
    assert record.to_tags() == {
        "mura.job": "nightly",
        "mura.model_version": "mura-cnn/3",
        "mura.model_uri": "models:/mura-cnn/3",
        "mura.model_run_id": "r1",
        "git_commit": "deadbeef",
        "mura.reference": "true",
        "mura.alert": "a; b",
    }
    assert record.to_metrics() == {
        "studies": 10,
        "images": 30,
        "flagged": 3,
        "quarantined": 1,
        "images_per_s": 5.0,
        "seconds": 6.0,
        "resumed_images": 2,
        "flag_rate": 0.3,
        "flag_rate.XR_HAND": 0.25,
        "drift.score_psi": 0.1,
        "write_back.studies": 4,
        "write_back.captures": 2,
        "write_back.failed": 1,
        "write_back.outbox_pending": 0,
        "write_back.reports": 3,
        "write_back.heatmaps": 2,
        "write_back.key_objects": 1,
        "write_back.versions": 1,
        "notify.sent": 7,
        "notify.queued": 2,
        "notify.resent": 1,
        "notify.pending": 2,
    }
    plain = ScreenRunRecord.of(
        screen_summary(monitored=False, written_back=False, told=False), **IDENTITY
    )
    assert "mura.reference" not in plain.to_tags() and "mura.alert" not in plain.to_tags()
    assert set(plain.to_metrics()) == {"studies", "images", "flagged", "quarantined"} | {
        "images_per_s",
        "seconds",
        "resumed_images",
    }
    params = ScreenRunParams("dicom", "d1", "u", "mura-cnn", None, "cnn", 64, 0.4, 32, 0)
    assert params.to_params() == {
        "source.kind": "dicom",
        "source.digest": "d1",
        "model.uri": "u",
        "model.name": "mura-cnn",
        "model.version": "unregistered",
        "model.arch": "cnn",
        "model.size": 64,
        "threshold": 0.4,
        "batch_size": 32,
        "gpus": 0,
    }


def test_a_screening_run_reads_back_as_it_was_logged() -> None:
    record = ScreenRunRecord.of(screen_summary(), **IDENTITY)
    metrics = {k: float(v) for k, v in record.to_metrics().items()}  # MLflow keeps floats
    back = ScreenRunRecord.from_run(metrics, record.to_tags(), {})
    assert back == record
    assert back.flag_rate == 0.3 and back.part_flag_rates() == {"XR_HAND": 0.25}
    old = ScreenRunRecord.from_run({"studies": 4.0}, {}, {})  # no tags: an early run
    assert (old.job, old.studies, old.reference, old.alert) == ("screen", 4, None, None)
    assert old.flag_rate is None and old.write_back is None and old.notify is None
    assert back.notify is not None and back.notify.sent == 7
    assert back.write_back is not None and back.write_back.versions == 1
    # a run logged before the objects were counted by kind: those read back as 0
    before = {k: v for k, v in metrics.items() if not k.startswith("write_back.")}
    before |= {"write_back.studies": 4.0, "write_back.captures": 2.0}
    before |= {"write_back.failed": 1.0, "write_back.outbox_pending": 0.0}
    earlier = ScreenRunRecord.from_run(before, record.to_tags(), {}).write_back
    assert earlier == WriteBackCounts(studies=4, captures=2, failed=1, outbox_pending=0)


def test_a_feedback_period_is_logged_and_read_back_with_todays_names() -> None:
    period = FeedbackPeriod(
        "2026-W49",
        40,
        {"sensitivity": Estimate(0.8, 0.7, 0.9), "auroc": Estimate(None)},
        {"XR_WRIST": {"sensitivity": Estimate(0.75, 0.6, None)}},
        alert="below",
    )
    assert period.to_tags() == {"mura.job": "feedback", "mura.period": "2026-W49"}
    assert period.to_metrics() == {
        "realized.studies": 40.0,
        "realized.sensitivity": 0.8,
        "realized.sensitivity_ci_low": 0.7,
        "realized.sensitivity_ci_high": 0.9,
        "realized.sensitivity.XR_WRIST": 0.75,
        "realized.sensitivity_ci_low.XR_WRIST": 0.6,
    }
    back = FeedbackPeriod.from_run(period.to_metrics(), {**period.to_tags(), Tag.ALERT: "below"})
    assert back.name == "2026-W49" and back.studies == 40 and back.alert == "below"
    assert back.figures == {"sensitivity": Estimate(0.8, 0.7, 0.9)}  # undefined: not logged
    assert back.by_part == {"XR_WRIST": {"sensitivity": Estimate(0.75, 0.6, None)}}
    with pytest.raises(KeyError):
        FeedbackPeriod.from_run({}, {"mura.job": "feedback"})
