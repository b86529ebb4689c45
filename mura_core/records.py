"""The typed records that flow from ingest to report, one shape per concept.

Archives (`mura_core.archive`) list `ImageRef`s (and `Problem`s); ingest and raw screening turn each
reference into an `ImageRow` (its final split, identifiers pseudonymized, the row Ray reads);
every input that cannot be used becomes one `QuarantineRow`; a screening run ends in a
`ScreenSummary` that the HTML report, the console summary and MLflow all read. Keeping
typed records means a body part, label or count never gets re-derived (and
re-interpreted) further down the pipeline.

The records that are rows of a Parquet table are also its schema (`mura_core.schema`): a
shard row is an `ImageRow`'s columns then a `DecodedImage`'s, `quarantine.parquet` holds
`QuarantineRow`s, a screened image is a `ScoredImage` (then its `Failure`, if any). Their
fields, in order and with their hints, are the columns; nothing else lists them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from mura_core.locations import (
    FileLocation,
    Location,
    PacsInstance,
    location_column,
    parse_location,
)
from mura_core.privacy import pseudonym_columns, pseudonymize_keys
from mura_core.schema import Float32, Int8, Int32, column_names, not_written

# (value, kind) → pseudonym: a `privacy.Pseudonymizer`, or an input's remembering
# `archive.pseudonyms.Pseudonyms`.
Pseudonym = Callable[[str, str], str]


class BodyPart(StrEnum):
    """The seven MURA study types, plus OTHER for an image nothing names.

    A body part outside MURA's seven that a source names explicitly (a labels CSV's
    `body_part`, DICOM BodyPartExamined: `leg`, `hip`, `KNEE`) keeps its own name, lower
    case (`body_part_named`), so per-part tables never lump it silently into OTHER. Body
    parts are therefore plain strings everywhere; this enum names the ones MURA knows.
    """

    ELBOW = "XR_ELBOW"
    FINGER = "XR_FINGER"
    FOREARM = "XR_FOREARM"
    HAND = "XR_HAND"
    HUMERUS = "XR_HUMERUS"
    SHOULDER = "XR_SHOULDER"
    WRIST = "XR_WRIST"
    OTHER = "OTHER"


MURA_BODY_PARTS: tuple[BodyPart, ...] = tuple(p for p in BodyPart if p is not BodyPart.OTHER)

# Keywords found in DICOM BodyPartExamined / Study / Series descriptions and folder names.
# Order matters: the first body part whose pattern matches wins, so specific terms
# ("upper arm", "forearm") come before the generic ones they contain ("arm").
_KEYWORDS: tuple[tuple[BodyPart, tuple[str, ...]], ...] = (
    (BodyPart.FINGER, ("finger", "thumb", "digit", "phalanx", "phalanges")),
    (BodyPart.WRIST, ("wrist", "carpal", "carpus", "scaphoid")),
    (BodyPart.HAND, ("hand", "metacarpal")),
    (BodyPart.FOREARM, ("forearm", "radius", "ulna")),
    (BodyPart.ELBOW, ("elbow", "olecranon")),
    (BodyPart.HUMERUS, ("humerus", "humeri", "upper arm", "upperarm")),
    (BodyPart.SHOULDER, ("shoulder", "clavicle", "scapula", "glenoid", "acromioclavicular")),
)
_PATTERNS = tuple(
    (part, re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")s?\b"))
    for part, words in _KEYWORDS
)


def part_order(parts: Iterable[str]) -> list[str]:
    """Body parts in table order: MURA's seven, other named parts A–Z, then OTHER."""
    mura = [str(p) for p in MURA_BODY_PARTS]
    present = set(parts)
    named = sorted(present - set(mura) - {str(BodyPart.OTHER)})
    return [p for p in (*mura, *named, str(BodyPart.OTHER)) if p in present]


_NAME = re.compile(r"[^a-z0-9]+")
NAME_MAX = 32


def body_part_named(named: str | None, *hints: str | None) -> str:
    """The body part of an image whose source names one (`named`) and gives other text.

    A MURA part found in `named` or the `hints` (in that order) wins, as in
    `body_part_from_text` (a `BodyPart`, itself a str); otherwise `named` itself, lower
    case, runs of other characters as `_` (`"Lower Leg"` → `lower_leg`, at most 32
    characters); with no name, OTHER.
    """
    part = body_part_from_text(named, *hints)
    if part is not BodyPart.OTHER or not named:
        return part
    name = _NAME.sub("_", str(named).lower()).strip("_")[:NAME_MAX]
    return name or BodyPart.OTHER


def body_part_from_text(*texts: str | None) -> BodyPart:
    """Map free text (DICOM BodyPartExamined, descriptions, folder names) to a body part.

    The texts are tried in order and the first one that names a MURA body part wins, so a
    caller passes the most authoritative field first. Anything that is not a letter separates
    words ("XR_WRIST", "WRIST3VIEWS", "upper-arm"); nothing matched gives OTHER.
    """
    for text in texts:
        if not text:
            continue
        words = re.sub(r"[^a-z]+", " ", str(text).lower())
        for part, pattern in _PATTERNS:
            if pattern.search(words):
                return part
    return BodyPart.OTHER


class Split(StrEnum):
    """Where an image came from in the source (MURA publishes train/valid); None if unknown."""

    TRAIN = "train"
    VALID = "valid"
    TEST = "test"


@dataclass(frozen=True, slots=True)
class ImageRef:
    """One image (one frame of one file or PACS instance) of one study.

    `location` is where its bytes are (`mura_core.locations`: a file, or a PACS instance);
    `relpath` is what reports show (relative to the archive root; a PACS instance's UIDs).
    `label` is the study's label (MURA labels studies, not images): 1 abnormal, 0 normal,
    None unknown. `frame` selects one frame of a multi-frame DICOM (0 for single images).
    """

    location: Location
    relpath: str
    image_id: str
    study_key: str
    patient_key: str
    body_part: str
    view: str | None = None
    label: int | None = None
    split: Split | None = None
    frame: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.location, FileLocation | PacsInstance):
            raise TypeError(f"location must be a Location, got {self.location!r}")
        if self.label not in (None, 0, 1):
            raise ValueError(f"label must be 0, 1 or None, got {self.label!r} for {self.relpath}")
        if self.frame < 0:
            raise ValueError(f"frame must be >= 0, got {self.frame} for {self.relpath}")

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (str/int/None), ready for Arrow, JSON or a Ray dataset row; the
        location as its `path` column (`locations.location_column`)."""
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "location"}
        row = {"path": location_column(self.location), **row}
        row["body_part"] = str(self.body_part)
        row["split"] = None if self.split is None else str(self.split)
        return row

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> ImageRef:
        split = row.get("split")
        label = row.get("label")
        return cls(
            location=parse_location(str(row["path"])),
            relpath=str(row["relpath"]),
            image_id=str(row["image_id"]),
            study_key=str(row["study_key"]),
            patient_key=str(row["patient_key"]),
            body_part=str(row["body_part"]),
            view=row.get("view"),
            label=None if label is None else int(label),
            split=None if split is None else Split(split),
            frame=int(row.get("frame") or 0),
        )


def _with_pseudonyms(record: Any, names: Iterable[str], pseudonym: Pseudonym) -> Any:
    """`record` with its identifier fields among `names` (per `privacy.PSEUDONYM_KINDS`)
    replaced by their pseudonyms (`privacy.pseudonymize_keys`); empty values stay."""
    keys = {name: getattr(record, name) for name in pseudonym_columns(names)}
    return replace(record, **pseudonymize_keys(keys, pseudonym))


@dataclass(frozen=True, slots=True)
class ImageRow:
    """An image reference as a dataset row, before decoding: the shard metadata columns
    (a shard row is these, then a `DecodedImage`'s) plus `location`, where the decoder
    reads its bytes (the dataset row's `path` column), which is never written to a shard,
    report or log. The schema table in docs/ingest.md is these fields and `DecodedImage`'s.
    """

    location: Location = not_written()
    image_id: str  # unique image id (DICOM: pseudonym of SOPInstanceUID[#frame])
    study_key: str  # study id (DICOM: pseudonym of StudyInstanceUID)
    patient_key: str  # patient id (DICOM: pseudonym of PatientID)
    body_part: str  # XR_ELBOW … XR_WRIST, another named part (`leg`, `hip`), or OTHER
    view: str | None  # view position if known (DICOM ViewPosition), else null
    label: Int8 | None  # study label: 1 abnormal, 0 normal, null unknown
    split: str  # train / val / test (by patient)
    source_split: Split | None  # the source's own split (MURA: train / valid), else null
    relpath: str  # path relative to the archive root (DICOM: pseudonym)
    frame: Int32 = 0  # frame index in a multi-frame file, else 0

    @classmethod
    def from_ref(cls, ref: ImageRef, split: str) -> ImageRow:
        return cls(
            location=ref.location,
            image_id=ref.image_id,
            study_key=ref.study_key,
            patient_key=ref.patient_key,
            body_part=ref.body_part,
            view=ref.view,
            label=ref.label,
            split=split,
            source_split=ref.split,
            relpath=ref.relpath,
            frame=ref.frame,
        )

    def pseudonymized(self, pseudonym: Pseudonym) -> ImageRow:
        """Identifiers replaced by pseudonyms; `location` is kept (read, never written)."""
        return _with_pseudonyms(self, column_names(ImageRow), pseudonym)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, for Ray Data's `from_items` (the decoder reads these keys): the
        one place a row becomes Arrow, its location the `path` string column."""
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "location"}
        row = {"path": location_column(self.location), **row}
        row["body_part"] = str(self.body_part)
        row["source_split"] = None if self.source_split is None else str(self.source_split)
        return row


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """What decoding adds to an `ImageRow` in a shard row: the pixels and how they were made
    (`mura_core.shards.image_schema`; `pixels` is size×size bytes, its width set there)."""

    orig_height: Int32  # height before resizing
    orig_width: Int32  # width before resizing
    windowing: str  # how intensities were mapped: window, voi_lut, percentile, …
    inverted: bool  # MONOCHROME1 / INVERSE was inverted so that bone is bright
    pixels: bytes  # uint8 size×size row-major, aspect kept, black padding (fixed-size binary)


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an image was not used: the decoder's error type and a one-line reason (the
    `problem` of a staging row, the last columns of a screened row that failed)."""

    error_type: str
    reason: str


@dataclass(frozen=True, slots=True)
class ScoredImage:
    """A screened image as the report's `images.parquet` holds it: keys, score, the decoded
    pixels' statistics (input drift, not content) and how they were decoded. A screening
    actor's row is these columns then a `Failure`'s (null where it scored; where it failed,
    `prob` and the statistics are null)."""

    image_id: str
    study_key: str
    patient_key: str
    body_part: str
    view: str | None
    label: Int8 | None
    relpath: str
    prob: float | None
    pixel_mean: Float32 | None
    pixel_std: Float32 | None
    windowing: str | None
    inverted: bool | None
    orig_height: Int32 | None
    orig_width: Int32 | None


@dataclass(frozen=True, slots=True)
class Problem:
    """An input that could not be used, and why: becomes one quarantine row downstream."""

    path: str
    stage: str
    error_type: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class QuarantineRow:
    """One input that could not be used, and why: a row of a quarantine table (its fields
    are the columns: `mura_core.shards.QUARANTINE_SCHEMA`).

    `path` is the input as the archive names it (relative path, or its pseudonym);
    `image_id` and `study_key` are known when the input was listed as an image and failed
    later, None when listing already refused it.
    """

    path: str
    image_id: str | None
    study_key: str | None
    stage: str
    error_type: str
    reason: str

    @classmethod
    def from_problem(cls, problem: Problem) -> QuarantineRow:
        """A file the listing refused: no image or study yet."""
        return cls(problem.path, None, None, problem.stage, problem.error_type, problem.reason)

    @classmethod
    def decode_failure(cls, row: Mapping[str, Any], error_type: str, reason: str) -> QuarantineRow:
        """A listed image (a dataset row: relpath, image_id, study_key) that did not decode."""
        return cls(row["relpath"], row["image_id"], row["study_key"], "decode", error_type, reason)

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> QuarantineRow:
        return cls(
            path=row["path"],
            image_id=row.get("image_id"),
            study_key=row.get("study_key"),
            stage=row["stage"],
            error_type=row["error_type"],
            reason=row["reason"],
        )

    def after(self, stage: str) -> QuarantineRow:
        """The row as a later stage reports it: stage `decode` seen by screening is
        `ingest/decode` when ingest quarantined it."""
        return replace(self, stage=f"{stage}/{self.stage}")

    def pseudonymized(self, pseudonym: Pseudonym) -> QuarantineRow:
        return _with_pseudonyms(self, (f.name for f in fields(self)), pseudonym)

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)


@dataclass(frozen=True)
class Listing:
    """What a source found: the usable image references, the problems, and skipped junk.

    Every file a source looked at ends in exactly one of `refs` (possibly several refs for a
    multi-frame file), `problems`, or `junk_skipped` (macOS `._*`, `.DS_Store`, DICOMDIR...).
    `accessions` holds the AccessionNumber of each study key whose headers give one (DICOM
    and PACS sources): it goes into the re-identification map only, so that radiologists'
    reads by accession number can be matched later (`mura feedback`). `headers` holds, for
    a PACS, each listed instance's header (a pydicom Dataset, by SOP Instance UID): results
    written back carry their patient and study modules.
    """

    kind: str
    root: str
    refs: tuple[ImageRef, ...]
    problems: tuple[Problem, ...] = ()
    junk_skipped: int = 0
    notes: tuple[str, ...] = field(default=())
    accessions: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, Any] = field(default_factory=dict)

    def studies(self) -> dict[str, list[ImageRef]]:
        """Image references grouped by study key, in listing order."""
        out: dict[str, list[ImageRef]] = {}
        for ref in self.refs:
            out.setdefault(ref.study_key, []).append(ref)
        return out


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
    whose SR (and, flagged, Secondary Captures) were acknowledged, objects, failures; and
    the flagged studies whose results could not be built (a picture failed: `not_built`,
    not screened this run, so the next one screens them again)."""

    destination: str
    studies: int = 0
    reports: int = 0  # SR objects
    captures: int = 0  # Secondary Capture objects
    failed: tuple[WriteBackFailure, ...] = ()
    outbox_delivered: int = 0  # objects of earlier runs delivered first
    outbox_pending: int = 0  # objects still waiting in the outbox after this run
    not_built: tuple[WriteBackFailure, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["failed"] = [asdict(f) for f in self.failed]
        data["not_built"] = [asdict(f) for f in self.not_built]
        if not self.not_built:  # newer key: only when not empty
            del data["not_built"]
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
        for name in ("write_back", "monitoring"):  # newer keys: only when present
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
            **{name: data[name] for name in plain if name in data},
        )
