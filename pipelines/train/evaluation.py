"""After training: metrics per split, the seed's Table 1, artifacts and the logged model.

Everything logged here is derived from shard rows whose identifiers are already keys or
pseudonyms; CAM example files are named by rank and body part, never by study or patient.
"""

from __future__ import annotations

import csv
import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pyarrow.dataset as pads
import torch

from mura_core.calibration import Reliability, reliability
from mura_core.cam import class_activation_maps, overlay_png
from mura_core.checkpoints import load_bundle, read_info
from mura_core.metrics import (
    Evaluation,
    evaluate_predictions,
    markdown_table,
    table_rows,
    text_table,
)
from mura_core.model_info import ModelInfo
from mura_core.monitoring.feedback import realized
from mura_core.monitoring.inputs import shard_inputs
from mura_core.monitoring.snapshot import Snapshot, save_reference
from mura_core.reports import confusion_plot, learning_curves, reliability_plot, roc_plot
from mura_core.run_contract import (
    CALIBRATION_TEMPERATURE,
    EpochReport,
    ModelVersionTags,
    ece_metric,
    evaluation_metrics,
    reference_metrics,
)
from mura_core.shards import ShardsLayout, pixels_array
from mura_core.studies import Predictions
from pipelines.registry.model_store import log_bundle
from pipelines.registry.tracking import use_tracking


@dataclass(frozen=True)
class SplitResult:
    """One split's evaluation at the chosen threshold."""

    name: str
    evaluation: Evaluation
    images: int


def evaluate_splits(
    predictions: dict[str, Predictions],
    threshold: float,
    *,
    seed: int = 0,
    part_thresholds: dict[str, float] | None = None,
) -> dict[str, SplitResult]:
    """Image- and study-level metrics for every split at the operating threshold(s)."""
    out = {}
    for split, pred in predictions.items():
        evaluation = evaluate_predictions(
            pred, threshold, seed=seed, part_thresholds=part_thresholds
        )
        out[split] = SplitResult(split, evaluation, len(pred))
    return out


def table1_row(splits: dict[str, SplitResult], model: str) -> dict[str, str]:
    """The seed paper's Table 1: train / val / test accuracy of one model (image level)."""
    row = {"model": model}
    for name in ("train", "val", "test"):
        acc = splits[name].evaluation.image.accuracy
        row[f"{name} accuracy"] = "n/a" if acc is None else f"{acc:.3f}"
    test_study = splits["test"].evaluation.study
    row["test study accuracy"] = (
        "n/a" if test_study.accuracy is None else f"{test_study.accuracy:.3f}"
    )
    return row


def summary_text(splits: dict[str, SplitResult], model: str) -> str:
    """What `mura train` prints at the end: Table 1 and the test study-level table."""
    test = splits["test"].evaluation
    return "\n".join(
        [
            "Table 1 (image-level accuracy):",
            text_table([table1_row(splits, model)]),
            "",
            f"test, study level (threshold {test.threshold:.3f}):",
            text_table(table_rows(test, "study")),
            *(
                f"note: {part}: {note}"
                for part, m in test.study_by_part.items()
                for note in m.notes
            ),
            *(f"note: overall: {note}" for note in test.study.notes),
        ]
    )


def _write_table(rows: list[dict[str, str]], folder: Path, stem: str) -> None:
    with (folder / f"{stem}.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (folder / f"{stem}.md").write_text(markdown_table(rows) + "\n")


def _cam_examples(
    bundle_dir: Path, shards: Path, pred: Predictions, folder: Path, count: int
) -> list[Path]:
    """CAM overlays for the first image of a few test studies: the most and least abnormal
    (an ensemble bundle's maps are its members' mean, see `mura_core.cam`)."""
    if count <= 0 or len(pred) == 0:
        return []
    studies = pred.studies()
    order = np.argsort(-studies.prob)
    chosen = list(order[: (count + 1) // 2]) + list(order[::-1][: count // 2])
    wanted = {}
    for idx in chosen:
        key = studies.keys[idx]
        first = next(i for i, k in enumerate(pred.study_key) if k == key)
        wanted[pred.image_id[first]] = (studies.body_part[idx], studies.label[idx])
    table = pads.dataset(str(ShardsLayout(shards).images), format="parquet").to_table(
        columns=["image_id", "pixels"], filter=pads.field("image_id").isin(list(wanted))
    )
    model, info = load_bundle(bundle_dir)
    images = pixels_array(table.column("pixels"))
    x = info.eval_preset()(torch.from_numpy(images.copy()))
    maps, probs = class_activation_maps(model, x)
    paths = []
    for rank, (image_id, image, cam, prob) in enumerate(
        zip(table.column("image_id").to_pylist(), images, maps, probs, strict=True)
    ):
        part, label = wanted[image_id]
        label_text = {1: "abnormal", 0: "normal"}.get(int(label), "unlabelled")
        resized = np.asarray(
            torch.nn.functional.interpolate(
                torch.from_numpy(image[None, None].astype(np.float32)),
                size=cam.shape,
                mode="bilinear",
            )
            .squeeze()
            .round()
            .clamp(0, 255)
            .byte()
        )
        path = folder / f"cam_{rank:02d}_{part}_{label_text}_p{prob:.2f}.png"
        overlay_png(resized, cam, path)
        paths.append(path)
    return paths


def _reliability(
    client: Any, run_id: str, curves: dict[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, Reliability]:
    """Each split's study-level reliability; its ECE logged as `<split>.study.ece`."""
    out = {}
    for name, (y, p) in curves.items():
        if len(y):
            out[name] = reliability(y, p)
            client.log_metric(run_id, ece_metric(name.split(" ")[0]), out[name].ece)
    return out


def log_calibration(
    client: Any, run_id: str, uncalibrated: dict[str, Predictions], temperature: float
) -> None:
    """`--calibrate`: the temperature, and each split's study-level ECE before it (the ECE
    after is `<split>.study.ece`, as for every run)."""
    client.log_metric(run_id, CALIBRATION_TEMPERATURE, temperature)
    for split in ("val", "test"):
        studies = uncalibrated[split].studies()
        known = studies.label >= 0
        if known.any():
            ece = reliability(studies.label[known], studies.prob[known]).ece
            client.log_metric(run_id, ece_metric(split, uncalibrated=True), ece)


def log_evaluation(
    *,
    client: Any,
    run_id: str,
    bundle_dir: Path,
    splits: dict[str, SplitResult],
    history: list[EpochReport],
    predictions: dict[str, Predictions],
    shards: Path,
    cam_examples: int,
) -> None:
    """Metrics, plots, tables and CAMs into run `run_id` (the model: `log_model`)."""
    metrics = evaluation_metrics(splits["test"].evaluation, "test")
    for split in ("train", "val"):
        metrics.update(evaluation_metrics(splits[split].evaluation, split, by_part=False))
    client.log_batch(
        run_id, metrics=[mlflow.entities.Metric(k, v, 0, 0) for k, v in metrics.items()]
    )
    model_name = read_info(bundle_dir).model
    with tempfile.TemporaryDirectory(prefix="mura-artifacts-") as tmp:
        folder = Path(tmp)
        learning_curves(history, folder / "learning_curves.png")
        curves = {}
        for split in ("val", "test"):
            st = predictions[split].studies()
            known = st.label >= 0
            curves[f"{split} study"] = (st.label[known], st.prob[known])
        roc_plot(curves, folder / "roc.png")
        reliability_plot(_reliability(client, run_id, curves), folder / "reliability.png")
        test = splits["test"].evaluation
        confusion_plot(test.study, "test studies", folder / "confusion_test_study.png")
        confusion_plot(test.image, "test images", folder / "confusion_test_image.png")
        _write_table(table_rows(test, "study"), folder, "test_study_by_body_part")
        _write_table(table_rows(test, "image"), folder, "test_image_by_body_part")
        _write_table([table1_row(splits, model_name)], folder, "table1")
        (folder / "history.json").write_text(json.dumps([h.to_dict() for h in history], indent=1))
        cams = folder / "cam"
        cams.mkdir()
        _cam_examples(bundle_dir, shards, predictions["test"], cams, cam_examples)
        client.log_artifacts(run_id, str(folder))


def validation_reference(
    shards: Path, val: Predictions, info: ModelInfo, body_part: str | None
) -> Snapshot:
    """What screening compares its nights with: the validation split's study scores, its
    flag rate at the model's threshold(s), body-part mix and images' input statistics."""
    studies = val.studies()
    inputs = shard_inputs(shards, "val", body_part)
    flagged = info.operating_point().flag(studies.prob, studies.body_part)
    snapshot = Snapshot.from_studies(
        studies.prob, studies.body_part, flagged, info.threshold, inputs
    )
    known = studies.label >= 0
    found = realized(
        studies.label[known], studies.prob[known], flagged[known], figures=("sensitivity",)
    )
    estimate = found["sensitivity"]
    return replace(snapshot, sensitivity=estimate.value, sensitivity_low=estimate.low)


def log_reference(client: Any, run_id: str, bundle_dir: Path, reference: Snapshot) -> None:
    """`reference.json` into the bundle (so it ships with the logged model) and the run."""
    path = save_reference(bundle_dir, reference)
    client.log_artifact(run_id, str(path))
    for name, value in reference_metrics(reference).items():
        client.log_metric(run_id, name, value)


def log_model(
    *,
    uri: str,
    run_id: str,
    bundle_dir: Path,
    registered_name: str,
    body_part: str | None,
    seed: int,
) -> tuple[str, str | None]:
    """The model into run `run_id`, registered as `registered_name`: (model URI, version)."""
    use_tracking(uri)
    with mlflow.start_run(run_id=run_id):
        return log_bundle(
            bundle_dir,
            registered_name=registered_name,
            tags=ModelVersionTags(run_id, seed=str(seed), body_part=body_part or "all"),
        )
