"""A DICOM tree of any depth, as PACS exports and CD-ROMs come: headers decide everything.

Study = StudyInstanceUID, patient = PatientID, body part = BodyPartExamined, else keywords
of the Study/Series Description or Protocol Name. Only headers are read while listing
(`stop_before_pixels`), so listing a large archive costs a fraction of decoding it. Labels,
which DICOM does not carry, may come from a `labels.csv` (study_instance_uid,label).
"""

from __future__ import annotations

from pathlib import Path

from ..imaging.dicom import looks_like_dicom, read_header
from ..records import BodyPart, ImageRef, Listing, Problem, body_part_from_text
from .common import DOC_SUFFIXES, SourceError, parse_label, read_header_csv, walk_files

KIND = "dicom"
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
LABELS_FILE = "labels.csv"


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(132)
    except OSError:
        return b""


def sniff_dicom(path: Path) -> bool:
    """True if the file has the DICOM preamble or a DICOM suffix."""
    return path.name.lower().endswith(DICOM_SUFFIXES) or looks_like_dicom(_head(path))


def _labels(path: Path | None) -> dict[str, int]:
    if path is None:
        return {}
    rows = read_header_csv(path, ("label",))
    columns = rows[0].keys() if rows else ()
    key_col = next((c for c in ("study_instance_uid", "study", "study_key") if c in columns), None)
    if rows and key_col is None:
        raise SourceError(f"{path}: needs a study_instance_uid column beside label")
    out: dict[str, int] = {}
    for line_no, row in enumerate(rows, start=2):
        try:
            label = parse_label(row["label"])
        except ValueError as exc:
            raise SourceError(f"{path} line {line_no}: {exc}") from exc
        if label is not None and key_col is not None:
            out[row[key_col]] = label
    return out


def list_dicom(root: Path, labels: Path | None = None) -> Listing:
    """Image references of every DICOM image below `root` (one per frame)."""
    labels_path = (
        labels
        if labels is not None
        else (root / LABELS_FILE if (root / LABELS_FILE).is_file() else None)
    )
    study_labels = _labels(labels_path)
    refs: list[ImageRef] = []
    problems: list[Problem] = []
    accessions: dict[str, str] = {}
    junk = 0
    for path, is_junk in walk_files(root):
        rel = path.relative_to(root).as_posix()
        if labels_path is not None and path == labels_path:
            continue
        if is_junk or path.name.lower().endswith(DOC_SUFFIXES):
            junk += 1
            continue
        has_preamble = looks_like_dicom(_head(path))
        if not has_preamble and not path.name.lower().endswith(DICOM_SUFFIXES):
            problems.append(
                Problem(
                    rel,
                    "list",
                    "not_dicom",
                    "not a DICOM file (no 'DICM' preamble, no .dcm suffix)",
                )
            )
            continue
        try:
            ds = read_header(str(path), force=not has_preamble)
        except Exception as exc:  # pydicom raises many types on damaged headers
            problems.append(
                Problem(
                    rel, "list", "corrupt", f"DICOM header unreadable ({type(exc).__name__}: {exc})"
                )
            )
            continue
        study_uid = str(ds.get("StudyInstanceUID", "") or "").strip()
        if not study_uid:
            problems.append(
                Problem(
                    rel,
                    "list",
                    "missing_study_uid",
                    "DICOM header has no StudyInstanceUID: cannot group it",
                )
            )
            continue
        patient = str(ds.get("PatientID", "") or "").strip() or f"unknown-patient:{study_uid}"
        if accession := str(ds.get("AccessionNumber", "") or "").strip():
            accessions.setdefault(study_uid, accession)
        body_part = body_part_from_text(
            ds.get("BodyPartExamined"),
            ds.get("StudyDescription"),
            ds.get("SeriesDescription"),
            ds.get("ProtocolName"),
        )
        view = str(ds.get("ViewPosition", "") or "").strip() or None
        sop_uid = str(ds.get("SOPInstanceUID", "") or "").strip() or rel
        try:
            n_frames = max(1, int(ds.get("NumberOfFrames") or 1))
        except (TypeError, ValueError):
            n_frames = 1
        for frame in range(n_frames):
            refs.append(
                ImageRef(
                    path=str(path),
                    relpath=rel,
                    image_id=sop_uid if n_frames == 1 else f"{sop_uid}#{frame}",
                    study_key=study_uid,
                    patient_key=patient,
                    body_part=BodyPart(body_part),
                    view=view,
                    label=study_labels.get(study_uid),
                    split=None,
                    frame=frame,
                )
            )
    notes = (f"labels from {labels_path.name}: {len(study_labels)} studies",) if labels_path else ()
    return Listing(
        kind=KIND,
        root=str(root),
        refs=tuple(refs),
        problems=tuple(problems),
        junk_skipped=junk,
        notes=notes,
        accessions=accessions,
    )
