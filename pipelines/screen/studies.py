"""Image scores to study rows: screening's Arrow side of `mura_core.decisions`.

`aggregate` turns the image scores (an Arrow table) into numpy columns, lets
`decisions.aggregate` make the study rows (count, mean and max probability, label, body part)
and turns them back into a table; `study_table` flags each study at its operating point
(`decisions.OperatingPoint`) and orders flagged studies first, most probable on top;
`unretrieved_studies` names the studies a PACS did not hand every image of, and `without`
drops them (a partial result would stand under the whole study's result UIDs).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mura_core.decisions import OperatingPoint
from mura_core.decisions import aggregate as aggregate_studies
from mura_core.pacs.client import RetrieveError
from mura_core.records import QuarantineRow
from mura_core.screen_report import ReportStudy
from mura_core.screen_summary import PartCounts
from pipelines.screen.models import ScreeningModel

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


def _numpy(column: pa.ChunkedArray) -> np.ndarray:
    return column.to_numpy(zero_copy_only=False)


def aggregate(images: pa.Table) -> pa.Table:
    """Study rows from the image scores: images, mean and max probability, label (null
    where unknown), sorted by study key.

    On the driver: the table holds no pixels (about 100 bytes an image, 4 MB for MURA's
    40,000), and it is a file on the driver's disk, which the nodes of a cluster without
    shared storage cannot read. (Ray Data's groupby of it did, on one machine: 0.8-2.5 s,
    and a node that died during scoring, not yet noticed by the cluster, failed the run
    when the read was scheduled on it.)
    """
    studies = aggregate_studies(
        _numpy(images["study_key"]),
        _numpy(images["prob"]),
        _numpy(pc.fill_null(images["label"], -1)).astype(np.int64),
        _numpy(images["body_part"]),
        _numpy(images["patient_key"]),
    )
    return pa.table(
        {
            "study_key": pa.array(studies.keys.tolist(), pa.string()),
            "patient_key": pa.array(studies.patient_key.tolist(), pa.string()),
            "body_part": pa.array(studies.body_part.tolist(), pa.string()),
            "images": pa.array(studies.images, pa.int64()),
            "mean_prob": pa.array(studies.prob, pa.float64()),
            "max_prob": pa.array(studies.max_prob, pa.float64()),
            "label": pa.array(studies.label, pa.int64(), mask=studies.label < 0),
        }
    )


def study_table(
    grouped: pa.Table, point: OperatingPoint, model: ScreeningModel, screened_at: str
) -> pa.Table:
    """One row per study, flagged ones first: each study at its body part's threshold
    (`point`: the model's, or `--threshold` for all)."""
    parts = _numpy(grouped["body_part"])
    mean = _numpy(grouped["mean_prob"])
    flags = point.flag(mean, parts)
    order = np.lexsort((-mean, ~flags)) if len(mean) else np.array([], np.int64)
    n = grouped.num_rows
    return pa.table(
        {
            "study_key": grouped["study_key"].take(order),
            "patient_key": grouped["patient_key"].take(order),
            "body_part": grouped["body_part"].take(order),
            "images": pc.cast(grouped["images"].take(order), pa.int64()),
            "mean_prob": grouped["mean_prob"].take(order),
            "max_prob": grouped["max_prob"].take(order),
            "flagged": pa.array(flags[order], pa.bool_()),
            "label": pc.cast(grouped["label"].take(order), pa.int8()),
            "model": pa.array([model.name] * n, pa.string()),
            "model_version": pa.array([model.version] * n, pa.string()),
            "threshold": pa.array(point.thresholds(parts)[order], pa.float64()),
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
