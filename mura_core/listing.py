"""What an archive lists: one `ImageRef` per usable image, one `Problem` per unusable file.

The recipe: an archive (`mura_core.archive`: a MURA tree, a DICOM tree, a folder, a PACS)
walks its inputs and ends in one `Listing` (every file it looked at is in exactly one of its
refs, problems or junk count); each `ImageRef` says where the image's bytes are (a
`mura_core.locations.Location`), its study and patient keys, body part
(`mura_core.body_parts`), view, label and the source's own `Split`. Ingest and raw screening
then turn each reference into an `ImageRow` (`mura_core.records`) and each problem into a
`QuarantineRow`; keeping typed records means a body part, label or count never gets
re-derived (and re-interpreted) further down the pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

from mura_core.locations import (
    FileLocation,
    Location,
    PacsInstance,
    location_column,
    parse_location,
)


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


@dataclass(frozen=True, slots=True)
class Problem:
    """An input that could not be used, and why: becomes one quarantine row downstream."""

    path: str
    stage: str
    error_type: str
    reason: str

    def to_dict(self) -> dict[str, str]:
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
