"""A DICOM tree of any depth, as PACS exports and CD-ROMs come: headers decide everything.

Study = StudyInstanceUID, patient = PatientID, body part = BodyPartExamined, else keywords
of the Study/Series Description or Protocol Name. Only headers are read while listing
(`stop_before_pixels`), so listing a large archive costs a fraction of decoding it. Labels,
which DICOM does not carry, may come from a `labels.csv` (study_instance_uid,label); a study
labelled twice, differently, is a problem `conflicting_labels` and left unlabelled.

Every file is opened through the archive layer (`mura_core.archive`), and a header is
bounded before it is believed: a deflated dataset is inflated only as far as its header
(`read_header`), and frames x rows x columns x samples must fit the pixel limit
(`check_geometry`) before any frame is listed. A second file with an instance UID already
listed is a problem `duplicate_instance`: the image counts once in its study.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from pydicom.dataset import Dataset

from mura_core.archive.base import FileArchive
from mura_core.archive.files import ArchiveFiles, Entry
from mura_core.archive.labels import LabelsFile, SourceError, parse_label, read_header_csv
from mura_core.archive.walk import FileLister, list_files
from mura_core.body_parts import body_part_named
from mura_core.imaging import DEFAULT_MAX_PIXELS, ImagingError
from mura_core.imaging.dicom import check_geometry, looks_like_dicom, read_header
from mura_core.listing import ImageRef, Listing, Problem
from mura_core.locations import FileLocation
from mura_core.studies import CONFLICTING_LABELS

KIND = "dicom"
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
LABELS_FILE = "labels.csv"


def sniff_dicom(files: ArchiveFiles, path: Path) -> bool:
    """True if the file has the DICOM preamble or a DICOM suffix."""
    return path.name.lower().endswith(DICOM_SUFFIXES) or looks_like_dicom(files.head(path, 132))


@dataclass
class StudyLabels:
    """The labels CSV: label per study key, the studies labelled twice differently, and
    one problem for each of those."""

    by_study: dict[str, int] = field(default_factory=dict)
    conflicted: set[str] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)


def labels_by_study(path: Path | None, files: ArchiveFiles | None = None) -> StudyLabels:
    """A `labels.csv` (study_instance_uid,label) read through the archive layer (`files`:
    the archive's own; None: a file the user named); a study labelled twice, differently,
    is unlabelled and said once."""
    out = StudyLabels()
    if path is None:
        return out
    rows = read_header_csv(path, ("label",), files)
    columns = rows[0].keys() if rows else ()
    key_col = next((c for c in ("study_instance_uid", "study", "study_key") if c in columns), None)
    if rows and key_col is None:
        raise SourceError(f"{path}: needs a study_instance_uid column beside label")
    first_line: dict[str, int] = {}
    for line_no, row in enumerate(rows, start=2):
        try:
            label = parse_label(row["label"])
        except ValueError as exc:
            raise SourceError(f"{path} line {line_no}: {exc}") from exc
        if label is None or key_col is None:
            continue
        key = row[key_col]
        if key in out.by_study and out.by_study[key] != label and key not in out.conflicted:
            out.conflicted.add(key)
            out.problems.append(
                Problem(
                    path.name,
                    "list",
                    CONFLICTING_LABELS,
                    f"lines {first_line[key]} and {line_no} label one study differently: "
                    "the study is left unlabelled",
                )
            )
        out.by_study.setdefault(key, label)
        first_line.setdefault(key, line_no)
    return out


@dataclass(frozen=True, slots=True)
class _Header:
    """What listing takes from a header, read while the file is guarded (pydicom converts
    an element only when it is read: a damaged one fails there)."""

    study_uid: str
    patient: str
    accession: str
    sop_uid: str
    body_part: str
    view: str | None
    frames: int

    @classmethod
    def of(cls, ds: Dataset) -> _Header:
        study_uid = _text(ds, "StudyInstanceUID")
        return cls(
            study_uid=study_uid,
            patient=_text(ds, "PatientID") or f"unknown-patient:{study_uid}",
            accession=_text(ds, "AccessionNumber"),
            sop_uid=_text(ds, "SOPInstanceUID"),
            body_part=body_part_named(
                _text(ds, "BodyPartExamined"),
                ds.get("StudyDescription"),
                ds.get("SeriesDescription"),
                ds.get("ProtocolName"),
            ),
            view=_text(ds, "ViewPosition") or None,
            frames=_frames(ds),
        )


def _text(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip()


def _header(files: ArchiveFiles, path: Path, rel: str) -> _Header | Problem:
    """The file's header, bounded and checked, or the problem that refuses it."""
    has_preamble = looks_like_dicom(files.head(path, 132))
    if not has_preamble and not path.name.lower().endswith(DICOM_SUFFIXES):
        reason = "not a DICOM file (no 'DICM' preamble, no .dcm suffix)"
        return Problem(rel, "list", "not_dicom", reason)
    try:
        with files.open(path) as handle:
            ds = read_header(handle, force=not has_preamble)
        if any(k in ds for k in ("Rows", "Columns", "NumberOfFrames")):
            check_geometry(ds, DEFAULT_MAX_PIXELS)
        header = _Header.of(ds)
    except ImagingError as exc:
        return Problem(rel, "list", exc.error_type, exc.reason)
    except Exception as exc:  # pydicom raises many types on damaged headers and values
        reason = f"DICOM header unreadable ({type(exc).__name__}: {exc})"
        return Problem(rel, "list", "corrupt", reason)
    if not header.study_uid:
        reason = "DICOM header has no StudyInstanceUID: cannot group it"
        return Problem(rel, "list", "missing_study_uid", reason)
    return header


def _frames(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def _refs(header: _Header, path: Path, rel: str, label: int | None) -> list[ImageRef]:
    """One reference per frame of a checked header."""
    sop_uid = header.sop_uid or rel
    return [
        ImageRef(
            location=FileLocation(str(path)),
            relpath=rel,
            image_id=sop_uid if header.frames == 1 else f"{sop_uid}#{frame}",
            study_key=header.study_uid,
            patient_key=header.patient,
            body_part=header.body_part,
            view=header.view,
            label=label,
            split=None,
            frame=frame,
        )
        for frame in range(header.frames)
    ]


def _duplicate(rel: str) -> Problem:
    return Problem(
        rel,
        "list",
        "duplicate_instance",
        "another file of the archive holds the same SOPInstanceUID: the image counts once",
    )


class DicomLister(FileLister):
    """A DICOM tree: every file but the labels CSV and documentation is read as DICOM (its
    header decides); a second file with an instance UID already listed is a problem."""

    kind = KIND

    def __init__(self, files: ArchiveFiles, labels: Path | None = None) -> None:
        super().__init__(files)
        self.labels_file = LabelsFile.find(files, labels, LABELS_FILE)
        self.study_labels = labels_by_study(self.labels_file.path, self.labels_file.files)
        self.instances: set[str] = set()
        self.by_study: dict[str, str] = {}

    def known_problems(self) -> list[Problem]:
        return self.study_labels.problems

    def is_own(self, entry: Entry) -> bool:
        return self.labels_file.is_listed(entry.path)

    def image(self, entry: Entry) -> list[ImageRef] | Problem:
        header = _header(self.files, entry.path, entry.rel)
        if isinstance(header, Problem):
            return header
        if header.sop_uid and header.sop_uid in self.instances:
            return _duplicate(entry.rel)
        self.instances.add(header.sop_uid)
        if header.accession:
            self.by_study.setdefault(header.study_uid, header.accession)
        label = self.study_labels.by_study.get(header.study_uid)
        if header.study_uid in self.study_labels.conflicted:
            label = None
        return _refs(header, entry.path, entry.rel, label)

    def notes(self) -> tuple[str, ...]:
        if self.labels_file.path is None:
            return ()
        return (
            f"labels from {self.labels_file.path.name}: {len(self.study_labels.by_study)} studies",
        )

    def accessions(self) -> dict[str, str]:
        return self.by_study


def list_dicom(files: ArchiveFiles, labels: Path | None = None) -> Listing:
    """Image references of every DICOM image below the archive root (one per frame)."""
    return list_files(DicomLister(files, labels))


@dataclass(frozen=True)
class DicomTreeArchive(FileArchive):
    """A DICOM tree of any depth (labels from `labels.csv` or the file given)."""

    kind: ClassVar[str] = KIND

    def lister(self) -> DicomLister:
        return DicomLister(self.files, self.labels)
