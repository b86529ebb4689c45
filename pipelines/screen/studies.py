"""Image scores to study rows: a group-by, the threshold, the report's rows.

`aggregate` groups the image scores by study (count, mean and max probability, label);
`study_table` flags at the threshold and orders flagged studies first, most probable on
top; `unretrieved_studies` names the studies a PACS did not hand every image of, and
`without` drops them (a partial result would stand under the whole study's result UIDs).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mura_core.pacs.client import RetrieveError
from mura_core.records import PartCounts, QuarantineRow
from mura_core.screen_report import ReportStudy
from mura_core.studies import label_from_range

from .models import ScreeningModel

STUDY_COLUMNS = [
    "study_key",
    "patient_key",
    "body_part",
    "images",
    "mean_prob",
    "max_prob",
    "flagged",
    "label",
    "model",
    "model_version",
    "threshold",
    "screened_at",
]


def aggregate(images: pa.Table) -> pa.Table:
    """Study rows from the image scores: images, mean and max probability, label.

    pyarrow's group_by on the driver: the table holds no pixels (about 100 bytes an image,
    4 MB for MURA's 40,000), and it is a file on the driver's disk, which the nodes of a
    cluster without shared storage cannot read. (Ray Data's groupby of it did, on one
    machine: 0.8-2.5 s, and a node that died during scoring, not yet noticed by the
    cluster, failed the run when the read was scheduled on it.)
    """
    grouped = images.group_by(["study_key", "patient_key", "body_part"]).aggregate(
        [("prob", "count"), ("prob", "mean"), ("prob", "max"), ("label", "min"), ("label", "max")]
    )
    names = {"prob_count": "images", "prob_mean": "mean_prob", "prob_max": "max_prob"}
    label = label_from_range(
        pc.fill_null(grouped["label_min"], -1).to_numpy(zero_copy_only=False),
        pc.fill_null(grouped["label_max"], -1).to_numpy(zero_copy_only=False),
    )
    grouped = grouped.drop(["label_min", "label_max"]).append_column(
        "label", pa.array(np.where(label < 0, None, label).tolist(), pa.int64())
    )
    return grouped.rename_columns([names.get(n, n) for n in grouped.column_names])


def study_table(
    grouped: pa.Table,
    threshold: float,
    model: ScreeningModel,
    screened_at: str,
    part_thresholds: dict[str, float] | None = None,
) -> pa.Table:
    """One row per study, flagged ones first: each study at its body part's threshold when
    `part_thresholds` names it, else at `threshold`."""
    by_part = part_thresholds or {}
    limits = np.array(
        [by_part.get(p, threshold) for p in grouped["body_part"].to_pylist()], dtype=np.float64
    )
    mean = grouped["mean_prob"].to_numpy()
    order = sorted(range(len(mean)), key=lambda i: (not mean[i] > limits[i], -mean[i]))
    grouped = grouped.take(pa.array(order, type=pa.int64()))
    limits = limits[order] if len(order) else limits
    n = grouped.num_rows
    label = pc.cast(grouped["label"], pa.int8()) if n else pa.array([], pa.int8())
    return pa.table(
        {
            "study_key": grouped["study_key"],
            "patient_key": grouped["patient_key"],
            "body_part": grouped["body_part"],
            "images": pc.cast(grouped["images"], pa.int64()),
            "mean_prob": grouped["mean_prob"],
            "max_prob": grouped["max_prob"],
            "flagged": pc.greater(grouped["mean_prob"], pa.array(limits, pa.float64())),
            "label": label,
            "model": pa.array([model.name] * n, pa.string()),
            "model_version": pa.array([model.version] * n, pa.string()),
            "threshold": pa.array(limits, pa.float64()),
            "screened_at": pa.array([screened_at] * n, pa.string()),
        }
    ).select(STUDY_COLUMNS)


def by_body_part(studies: pa.Table) -> dict[str, PartCounts]:
    out: dict[str, PartCounts] = {}
    for part, images, flagged in zip(
        studies["body_part"].to_pylist(),
        studies["images"].to_pylist(),
        studies["flagged"].to_pylist(),
        strict=True,
    ):
        c = out.get(part, PartCounts())
        out[part] = PartCounts(c.studies + 1, c.images + images, c.flagged + int(flagged))
    return dict(sorted(out.items()))


def report_studies(studies: pa.Table, pictures: dict[str, tuple[Any, ...]]) -> list[ReportStudy]:
    return [
        ReportStudy(
            study_key=r["study_key"],
            patient_key=r["patient_key"],
            body_part=r["body_part"],
            images=r["images"],
            mean_prob=r["mean_prob"],
            max_prob=r["max_prob"],
            flagged=r["flagged"],
            label=r["label"],
            pictures=pictures.get(r["study_key"], ()),
        )
        for r in studies.to_pylist()
    ]


def without(studies: pa.Table, keys: list[str]) -> pa.Table:
    if not keys:
        return studies
    return studies.filter(pc.invert(pc.is_in(studies["study_key"], pa.array(keys, pa.string()))))


def unretrieved_studies(problems: list[QuarantineRow]) -> list[str]:
    """Studies with an image the PACS did not hand over: not screened this run (a partial
    result would stand under the whole study's result UIDs), screened again by the next."""
    failed = {q.study_key for q in problems if q.error_type == RetrieveError.error_type}
    return sorted(k for k in failed if k is not None)
