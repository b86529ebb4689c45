"""A screening run's summary: the `ScreenSummary` record and its file, `summary.json`.

The recipe: a screening run counts what it did (`ScreenCounts`, `PartCounts` per body part),
names what it screened and with what (`SourceSummary`, `ModelSummary`), adds the write-back
(`WriteBackSummary`), what the worklist was told (`mura_core.notify.summary.NotifySummary`),
its monitoring point (`MonitoringSummary`) and the images whose pictures failed
(`PictureFailure`), and writes the whole as `summary.json` last
(`write_summary`): its presence marks a complete report. The HTML report
(`mura_core.screen_report`), the console summary and the MLflow logging read it back
(`read_summary`); older or partial summaries still read (optional keys).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mura_core.notify.summary import NotifySummary
from mura_core.records import QuarantineRow
from mura_core.shards import write_json_atomic

SUMMARY_FILE = "summary.json"


@dataclass(frozen=True, slots=True)
class SourceSummary:
    """What was screened: the input's kind (shards, mura, dicom, folder) and its digest."""

    kind: str
    digest: str


@dataclass(frozen=True, slots=True)
class ModelSummary:
    """The model that screened: its URI(s), registry name and version, architecture."""

    uri: str
    name: str
    version: str | None
    model: str
    size: int
    members: int = 1


@dataclass(frozen=True, slots=True)
class ScreenCounts:
    """A screening run's totals: studies, images scored, flagged studies, inputs refused."""

    studies: int = 0
    images: int = 0
    flagged: int = 0
    quarantined: int = 0


@dataclass(frozen=True, slots=True)
class PartCounts:
    """One body part's studies, images and flagged studies."""

    studies: int = 0
    images: int = 0
    flagged: int = 0


@dataclass(frozen=True, slots=True)
class WriteBackFailure:
    """A study whose results the destination did not take: its key (a pseudonym) and why.
    Its objects wait in the outbox, which the next run delivers first."""

    study_key: str
    reason: str


@dataclass(frozen=True)
class WriteBackSummary:
    """Results stored into the PACS: the destination address (never credentials), studies
    whose objects (SR; flagged: Secondary Captures, heatmaps, key-object document) were
    acknowledged, objects by kind, new SR versions, failures; and the flagged studies whose
    results could not be built (a picture failed, or the PACS could not be asked for the
    study's earlier SRs: `not_built`, not screened this run, so
    the next one screens them again)."""

    destination: str
    studies: int = 0
    reports: int = 0  # SR objects stored (an SR already in the PACS is not sent again)
    captures: int = 0  # Secondary Capture objects
    failed: tuple[WriteBackFailure, ...] = ()
    outbox_delivered: int = 0  # objects of earlier runs delivered first
    outbox_pending: int = 0  # objects still waiting in the outbox after this run
    not_built: tuple[WriteBackFailure, ...] = ()
    heatmaps: int = 0  # Segmentation objects over the flagged studies' views
    key_objects: int = 0  # Key Object Selection documents
    versions: int = 0  # SRs stored that supersede an earlier SR of their study

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["failed"] = [asdict(f) for f in self.failed]
        data["not_built"] = [asdict(f) for f in self.not_built]
        for newer in ("not_built", "heatmaps", "key_objects", "versions"):
            if not data[newer]:  # newer keys: only when not empty
                del data[newer]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WriteBackSummary:
        failed = tuple(WriteBackFailure(**f) for f in data.get("failed") or ())
        not_built = tuple(WriteBackFailure(**f) for f in data.get("not_built") or ())
        return cls(**{**data, "failed": failed, "not_built": not_built})


@dataclass(frozen=True)
class PictureFailure:
    """An image whose pictures (report thumbnail and CAM overlay, or Secondary Capture)
    could not be made after it was scored: its keys (pseudonyms) and why."""

    study_key: str
    image_id: str
    error_type: str
    reason: str


@dataclass(frozen=True)
class MonitoringSummary:
    """A screening run as a monitoring point: its figures (flat names, as logged to MLflow:
    `flag_rate`, `flag_rate.XR_WRIST`, `score.p50`, `input.pixel_mean.p50`,
    `quarantine_rate.decode_error`, `drift.score_psi`, …), whether the model carried a
    reference to compare with, and the one-line reasons of its alerts (none: in band)."""

    reference: bool
    figures: dict[str, float] = field(default_factory=dict)
    alerts: tuple[str, ...] = ()

    @property
    def alert(self) -> str | None:
        """The `mura.alert` tag: every reason on one line, None when in band."""
        return "; ".join(self.alerts) or None

    def to_json(self) -> dict[str, Any]:
        return {"reference": self.reference, "figures": self.figures, "alerts": list(self.alerts)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MonitoringSummary:
        return cls(bool(data["reference"]), dict(data["figures"]), tuple(data["alerts"]))


SUMMARY_QUARANTINE_ROWS = 200  # quarantine rows a summary carries (the table has them all)


@dataclass(frozen=True)
class ScreenSummary:
    """A screening run, as `summary.json` holds it (written last: the report is complete).

    Read by the HTML report, the console summary and the MLflow logging. Fields with a
    default are optional: an older or partial summary still renders. `quarantine` holds the
    first SUMMARY_QUARANTINE_ROWS rows; `counts.quarantined` is the total.
    """

    screened_at: str
    source: SourceSummary
    model: ModelSummary
    threshold: float
    counts: ScreenCounts
    title: str = "MURA screening report"
    job: str = "screen"
    experiment: str | None = None
    by_body_part: dict[str, PartCounts] = field(default_factory=dict)
    quarantine: tuple[QuarantineRow, ...] = ()
    gpus: int = 0
    images_per_s: float | None = None
    pictures_limit_note: str | None = None
    seconds: float | None = None
    phases: dict[str, float] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    write_back: WriteBackSummary | None = None
    incomplete_studies: tuple[str, ...] = ()  # images not retrieved: not screened this run
    source_notes: tuple[str, ...] = ()  # what listing said (PACS: matched, skipped by kind)
    resumed: int = 0  # images whose scores an interrupted run into the same report left
    monitoring: MonitoringSummary | None = None
    picture_failures: tuple[PictureFailure, ...] = ()  # scored, but no pictures made
    notify: NotifySummary | None = None  # --notify: what the worklist was told

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types, the keys `summary.json` has always had."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(
            source=asdict(self.source),
            model=asdict(self.model),
            counts=asdict(self.counts),
            by_body_part={part: asdict(c) for part, c in self.by_body_part.items()},
            quarantine=[row.to_dict() for row in self.quarantine],
            phases=dict(self.phases),
            incomplete_studies=list(self.incomplete_studies),
            source_notes=list(self.source_notes),
            picture_failures=[asdict(f) for f in self.picture_failures],
        )
        if self.pictures_limit_note is None:
            del data["pictures_limit_note"]
        if not self.resumed:  # newer key: only when not zero
            del data["resumed"]
        # newer keys: only when not empty
        for name in ("incomplete_studies", "source_notes", "picture_failures"):
            if not data[name]:
                del data[name]
        for name in ("write_back", "monitoring", "notify"):  # newer keys: only when present
            value = getattr(self, name)
            if value is None:
                del data[name]
            else:
                data[name] = value.to_json()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScreenSummary:
        """Back from `to_json()`; optional keys may be absent."""
        plain = ("title", "job", "experiment", "gpus", "images_per_s", "seconds")
        plain += ("pictures_limit_note", "mlflow_run_id", "resumed")
        return cls(
            screened_at=data["screened_at"],
            source=SourceSummary(**data["source"]),
            model=ModelSummary(**data["model"]),
            threshold=float(data["threshold"]),
            counts=ScreenCounts(**data["counts"]),
            by_body_part={
                part: PartCounts(**c) for part, c in (data.get("by_body_part") or {}).items()
            },
            quarantine=tuple(QuarantineRow.from_dict(r) for r in data.get("quarantine") or ()),
            incomplete_studies=tuple(data.get("incomplete_studies") or ()),
            source_notes=tuple(data.get("source_notes") or ()),
            picture_failures=tuple(PictureFailure(**f) for f in data.get("picture_failures") or ()),
            phases=dict(data.get("phases") or {}),
            write_back=(
                WriteBackSummary.from_json(data["write_back"]) if data.get("write_back") else None
            ),
            monitoring=(
                MonitoringSummary.from_json(data["monitoring"]) if data.get("monitoring") else None
            ),
            notify=NotifySummary.from_json(data["notify"]) if data.get("notify") else None,
            **{name: data[name] for name in plain if name in data},
        )


def write_summary(folder: Path, summary: ScreenSummary) -> Path:
    """`folder/summary.json`, atomically: written last, its presence marks a complete report
    (an OSError: one line naming it, no temporary file left)."""
    path = Path(folder) / SUMMARY_FILE
    write_json_atomic(path, summary.to_json())
    return path


def read_summary(folder: Path) -> ScreenSummary:
    return ScreenSummary.from_json(json.loads((Path(folder) / SUMMARY_FILE).read_text()))
