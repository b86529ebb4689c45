"""A PACS as a source: list studies and their instances from headers only, fetch nothing.

The recipe: `pacs.check()` (fail fast) → `find_studies(query)` (StudyDate window, one query
per modality, ModalitiesInStudy) → per study, in a few threads, `find_instances` (QIDO-RS
instance search or C-FIND at IMAGE level) → each instance is

- an image of a wanted modality → an `ImageRef` (one per frame) whose `location` is its
  `PacsInstance` (the UIDs to fetch it by; never written anywhere), study = StudyInstanceUID,
  patient = PatientID, body part from BodyPartExamined or the descriptions, as for a tree;
- one of our own results (SR, Secondary Capture: `mura_core.results.is_own_result`), a
  non-image object (SR, KO, PR, …: by SOP class, never fetched), an image of another
  modality, or one whose UIDs no request can name ('/', '@', spaces: `addressable`) →
  skipped and counted by kind (a study with such a StudyInstanceUID is never listed: noted).

Labels, which a PACS does not hold, may come from a CSV (study_instance_uid,label).
The headers are kept (`Listing.headers`): results written back carry their patient and
study modules.

`PacsArchive` is the `Archive` of both PACS kinds, `dicomweb` and `dimse`: what differs
between them is its `Pacs` client (`mura_core.pacs.dicomweb` / `mura_core.pacs.dimse`),
made from the address by `open_pacs` and checked there (fail fast).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from pydicom.dataset import Dataset
from pydicom.uid import UID

from mura_core.archive.base import NotThisArchiveError, Read
from mura_core.archive.dicom_tree import labels_by_study
from mura_core.archive.source import PacsSource
from mura_core.body_parts import body_part_named
from mura_core.listing import ImageRef, Listing
from mura_core.locations import Location, PacsInstance, addressable
from mura_core.pacs.address import PacsQuery
from mura_core.pacs.client import Pacs, PacsOptions
from mura_core.results import is_own_result

LIST_THREADS = 8


def is_image_class(sop_class: str) -> bool:
    """Image storage SOP classes ("… Image Storage"); SR, KO, PR, PDF, RT … are not."""
    name = UID(sop_class).name if sop_class else ""
    return "Image Storage" in name


def _text(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip()


def skip_reason(ds: Dataset, modalities: tuple[str, ...]) -> str | None:
    """Why an instance is not screened (a count key), or None for an image to screen."""
    if not all(addressable(_text(ds, k)) for k in ("SeriesInstanceUID", "SOPInstanceUID")):
        return "unusable UID"
    sop_class = _text(ds, "SOPClassUID")
    if is_own_result(
        _text(ds, "Modality"),
        sop_class,
        _text(ds, "SeriesDescription"),
        _text(ds, "Manufacturer"),
    ):
        return "our own results"
    if not is_image_class(sop_class):
        return f"non-image {UID(sop_class).name or sop_class or 'unknown SOP class'}"
    modality = _text(ds, "Modality").upper()
    if modality not in modalities:
        return f"modality {modality or 'none'}"
    return None


def _refs(ds: Dataset, label: int | None) -> list[ImageRef]:
    loc = PacsInstance.of(ds)
    try:
        frames = max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        frames = 1
    part = body_part_named(
        _text(ds, "BodyPartExamined"),
        ds.get("StudyDescription"),
        ds.get("SeriesDescription"),
        ds.get("ProtocolName"),
    )
    patient = _text(ds, "PatientID") or f"unknown-patient:{loc.study}"
    return [
        ImageRef(
            location=loc,
            relpath=str(loc),
            image_id=loc.sop if frames == 1 else f"{loc.sop}#{frame}",
            study_key=loc.study,
            patient_key=patient,
            body_part=part,
            view=_text(ds, "ViewPosition") or None,
            label=label,
            split=None,
            frame=frame,
        )
        for frame in range(frames)
    ]


def list_pacs(pacs: Pacs, query: PacsQuery, labels: Path | None = None) -> Listing:
    """Every instance of the matching studies: a reference, or skipped with its kind."""
    study_labels = labels_by_study(labels)
    matched = pacs.find_studies(query)
    studies = [uid for uid in matched if addressable(uid)]
    with ThreadPoolExecutor(LIST_THREADS) as pool:
        per_study = list(pool.map(pacs.find_instances, studies))
    refs: list[ImageRef] = []
    headers: dict[str, Dataset] = {}
    accessions: dict[str, str] = {}
    skipped: Counter[str] = Counter()
    for study, instances in zip(studies, per_study, strict=True):
        for ds in sorted(instances, key=lambda d: (_text(d, "SeriesInstanceUID"), _sort(d))):
            reason = skip_reason(ds, query.modalities)
            if reason is not None:
                skipped[reason] += 1
                continue
            label = None if study in study_labels.conflicted else study_labels.by_study.get(study)
            new = _refs(ds, label)
            if query.body_part is not None and new[0].body_part != query.body_part:
                skipped[f"body part {new[0].body_part}"] += 1
                continue
            refs.extend(new)
            headers[_text(ds, "SOPInstanceUID")] = ds
            if accession := _text(ds, "AccessionNumber"):
                accessions.setdefault(study, accession)
    notes = [f"{len(studies)} studies matched {_describe(query)} at {pacs.address}"]
    if len(studies) < len(matched):
        notes.append(
            f"skipped {len(matched) - len(studies)} more whose StudyInstanceUID no request "
            "can name (it holds '/', '@', spaces, …)"
        )
    if skipped:
        notes.append(
            "skipped, never fetched: " + ", ".join(f"{k} {v}" for k, v in sorted(skipped.items()))
        )
    if labels is not None:
        notes.append(f"labels from {labels.name}: {len(study_labels.by_study)} studies")
    return Listing(
        kind=pacs.address.protocol,
        root=str(pacs.address),
        refs=tuple(refs),
        problems=tuple(study_labels.problems),
        junk_skipped=sum(skipped.values()),
        notes=tuple(notes),
        accessions=accessions,
        headers=headers,
    )


def _sort(ds: Dataset) -> tuple[int, str]:
    try:
        number = int(ds.get("InstanceNumber") or 0)
    except (TypeError, ValueError):
        number = 0
    return number, _text(ds, "SOPInstanceUID")


def _describe(query: PacsQuery) -> str:
    parts = [f"modality {'/'.join(query.modalities)}"]
    if query.since or query.until:
        parts.append(f"StudyDate {query.since or '…'} to {query.until or '…'}")
    if query.body_part is not None:
        parts.append(f"body part {query.body_part}")
    return ", ".join(parts)


@dataclass(frozen=True)
class PacsArchive:
    """A PACS as an `Archive`: listed from headers, its instances fetched by batch."""

    pacs: Pacs
    query: PacsQuery = field(default_factory=PacsQuery)
    labels: Path | None = None
    remote: ClassVar[bool] = True

    @property
    def kind(self) -> str:
        return self.pacs.address.protocol

    @property
    def root(self) -> str:
        return str(self.pacs.address)

    def list(self) -> Listing:
        return list_pacs(self.pacs, self.query, self.labels)

    def read(self, locations: Sequence[Location]) -> Iterator[Read]:
        """The batch's instances fetched at once (one request or association per slice:
        `Pacs.fetch`), then handed out in order."""
        instances = [loc for loc in locations if isinstance(loc, PacsInstance)]
        fetched = self.pacs.fetch(instances) if instances else {}
        for location in locations:
            if isinstance(location, PacsInstance):
                yield location, fetched[location]
            else:
                yield location, NotThisArchiveError(f"not an instance of {self.root}")


def open_pacs(source: PacsSource, options: PacsOptions, labels: Path | None) -> PacsArchive:
    """The PACS at `source` with its client (DICOMweb or DIMSE, by the address), checked:
    unreachable, refused credentials or a rejected association fail here, before work."""
    pacs = options.connect(source.parsed())
    pacs.check()
    return PacsArchive(pacs, options.query, labels)
