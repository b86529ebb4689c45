"""The records that are rows of a Parquet table, and therefore its schema.

The recipe: ingest and raw screening turn each `mura_core.listing.ImageRef` into an
`ImageRow` (its final split, identifiers pseudonymized: the row Ray reads); decoding adds a
`DecodedImage`; every input that cannot be used becomes one `QuarantineRow` (from a listing's
`Problem`, or a row that failed to decode); a screened image is a `ScoredImage`, then its
`Failure` if any. A run's totals are the `mura_core.screen_summary.ScreenSummary`.

These records are also their tables' schemas (`mura_core.schema`): a shard row is an
`ImageRow`'s columns then a `DecodedImage`'s, `quarantine.parquet` holds `QuarantineRow`s,
the report's `images.parquet` holds `ScoredImage`s (the screening actor's row: then a
`Failure`'s columns). Their fields, in order and with their hints, are the columns; nothing
else lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from mura_core.listing import ImageRef, Problem, Split
from mura_core.locations import Location, location_column
from mura_core.privacy import pseudonym_columns, pseudonymize_keys
from mura_core.schema import Float32, Int8, Int32, column_names, not_written

# (value, kind) → pseudonym: a `privacy.Pseudonymizer`, or an input's remembering
# `archive.pseudonyms.Pseudonyms`.
Pseudonym = Callable[[str, str], str]


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
