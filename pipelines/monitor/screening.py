"""Every screening run is a monitoring point (`mura_core.monitoring`).

From the report's own tables, on the driver, after scoring: tonight's snapshot (study scores,
flag rate, body-part mix, input statistics of the scored images), its figures under the flat
names MLflow gets (`flag_rate`, `flag_rate.<part>`, `score.p50`, `input.pixel_mean.p50`,
`input.inverted`, `input.windowing.<kind>`, `quarantine_rate.<error type>`, `drift.*`), and,
when the model carries a reference (`reference.json`, saved at training), the drift against it
and the alerts outside `Bands`. A model without a reference gets figures and no drift: the
nights are then compared with each other only (`mura monitor`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mura_core.monitoring.drift import Bands, alerts, drift
from mura_core.monitoring.inputs import Inputs, quantiles
from mura_core.monitoring.snapshot import Snapshot, load_reference
from mura_core.records import QuarantineRow
from mura_core.run_contract import FLAG_RATE
from mura_core.screen_summary import MonitoringSummary


def night_snapshot(studies: pa.Table, images: pa.Table, threshold: float) -> Snapshot:
    """Tonight as monitoring sees it, from the study and image tables of the report."""
    scored = images.filter(pc.is_valid(images["pixel_mean"]))
    height = scored["orig_height"].to_numpy(zero_copy_only=False)
    width = scored["orig_width"].to_numpy(zero_copy_only=False)
    inputs = Inputs.measure(
        scored["pixel_mean"].to_numpy(zero_copy_only=False),
        scored["pixel_std"].to_numpy(zero_copy_only=False),
        scored["windowing"].to_pylist(),
        scored["inverted"].to_pylist(),
        np.fmax(height.astype(np.float64), width.astype(np.float64)),
    )
    return Snapshot.from_studies(
        studies["mean_prob"].to_numpy(zero_copy_only=False),
        studies["body_part"].to_pylist(),
        studies["flagged"].to_numpy(zero_copy_only=False),  # as the study table decided
        threshold,
        inputs,
    )


def night_figures(
    night: Snapshot, studies: pa.Table, quarantine: list[QuarantineRow]
) -> dict[str, float]:
    """Tonight's own figures (no reference needed)."""
    figures: dict[str, float] = {}
    if night.flag_rate is not None:
        figures[FLAG_RATE] = night.flag_rate
    flagged = Counter(
        p
        for p, f in zip(
            studies["body_part"].to_pylist(), studies["flagged"].to_pylist(), strict=True
        )
        if f
    )
    for part, count in night.body_parts.items():
        figures[f"{FLAG_RATE}.{part}"] = flagged[part] / count
        figures[f"studies.{part}"] = float(count)
    figures.update({f"score.{k}": v for k, v in night.score_quantiles().items()})
    inputs = night.inputs
    if inputs is not None:
        figures.update(
            {f"input.pixel_mean.{k}": v for k, v in quantiles(inputs.pixel_mean).items()}
        )
        figures.update({f"input.pixel_std.{k}": v for k, v in quantiles(inputs.pixel_std).items()})
        figures["input.inverted"] = float(inputs.inverted)
        figures.update({f"input.windowing.{k}": float(v) for k, v in inputs.windowing.items()})
        figures.update({f"input.orig_size.{k}": v for k, v in inputs.orig_size_quantiles.items()})
    seen = (inputs.images if inputs is not None else 0) + len(quarantine)
    for reason, count in Counter(q.error_type for q in quarantine).items():
        figures[f"quarantine_rate.{reason}"] = count / max(seen, 1)
    return figures


def monitor(
    model_folder: Path,
    studies: pa.Table,
    images: pa.Table,
    quarantine: list[QuarantineRow],
    threshold: float,
    bands: Bands,
) -> MonitoringSummary:
    """Tonight's figures, and drift and alerts against the model's reference if it has one."""
    night = night_snapshot(studies, images, threshold)
    figures = night_figures(night, studies, quarantine)
    reference = load_reference(model_folder)
    if reference is None:
        return MonitoringSummary(reference=False, figures=figures)
    found = drift(reference, night)
    figures.update(found.metrics())
    return MonitoringSummary(True, figures, tuple(alerts(found, night, bands)))
