"""Write a planned synthetic archive to disk: MURA-v1.1 PNGs with CSVs, or a DICOM tree."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

from mura_core.body_parts import BodyPart
from mura_core.listing import Split
from mura_core.synth.anatomy import render_view
from mura_core.synth.plan import StudyPlan, SynthConfig

MURA_ROOT = "MURA-v1.1"
DICOM_LABELS = "labels.csv"

_BODY_PART_EXAMINED = {
    BodyPart.ELBOW: "ELBOW",
    BodyPart.FINGER: "FINGER",
    BodyPart.FOREARM: "FOREARM",
    BodyPart.HAND: "HAND",
    BodyPart.HUMERUS: "HUMERUS",
    BodyPart.SHOULDER: "SHOULDER",
    BodyPart.WRIST: "WRIST",
}
_VIEW_POSITIONS = ("PA", "LL", "OBL", "AP")
_GIVEN = ("JANE", "JOHN", "MARIA", "AHMET", "AYSE", "WEI", "FATIMA", "OLGA", "LUIS", "KENJI")
_FAMILY = ("DOE", "SMITH", "YILMAZ", "KAYA", "GARCIA", "MUELLER", "CHEN", "IVANOVA", "SATO")


def render_study(study: StudyPlan, sign_strength: float = 1.0) -> list[np.ndarray]:
    """The study's views as float32 images in [0, 1], bone bright; rng from the study seed."""
    rng = np.random.default_rng(study.seed)
    return [
        render_view(
            str(study.body_part),
            rng=rng,
            height=v.height,
            width=v.width,
            sign=v.sign,
            view=v.index,
            anatomy_seed=study.seed,
            sign_strength=sign_strength,
        )
        for v in study.views
    ]


def study_dir(study: StudyPlan) -> str:
    """'train/XR_WRIST/patient00001/study1_positive' (relative to MURA-v1.1)."""
    outcome = "positive" if study.label else "negative"
    return f"{study.split}/{study.body_part}/{study.patient}/study{study.study_number}_{outcome}"


def write_png_study(root: Path, study: StudyPlan, images: list[np.ndarray]) -> list[str]:
    """Write one study's PNGs; returns their paths relative to MURA-v1.1."""
    folder = root / MURA_ROOT / study_dir(study)
    folder.mkdir(parents=True, exist_ok=True)
    rels = []
    for view, image in zip(study.views, images, strict=True):
        pixels = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
        # about one film in eight is stored as RGB, as in the real release
        if (study.seed + view.index) % 8 == 0:
            pixels = np.repeat(pixels[..., None], 3, axis=2)
        name = f"image{view.index + 1}.png"
        Image.fromarray(pixels).save(folder / name, optimize=False, compress_level=3)
        rels.append(f"{study_dir(study)}/{name}")
    return rels


def write_mura_csvs(
    root: Path, studies: tuple[StudyPlan, ...], images: dict[int, list[str]]
) -> None:
    """The four header-less CSVs, paths prefixed with 'MURA-v1.1/' as published."""
    base = root / MURA_ROOT
    for split in (Split.TRAIN, Split.VALID):
        chosen = [s for s in studies if s.split is split]
        with (base / f"{split}_image_paths.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            for study in chosen:
                for rel in images[study.index]:
                    writer.writerow([f"{MURA_ROOT}/{rel}"])
        with (base / f"{split}_labeled_studies.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            for study in chosen:
                writer.writerow([f"{MURA_ROOT}/{study_dir(study)}/", study.label])


def study_uid(cfg: SynthConfig, study: StudyPlan) -> str:
    """Deterministic StudyInstanceUID (pydicom's generate_uid with entropy sources)."""
    return generate_uid(entropy_srcs=[f"mura-synth:{cfg.seed}:study:{study.index}"])


def accession_number(cfg: SynthConfig, study: StudyPlan) -> str:
    """Deterministic AccessionNumber (the number a RIS orders the study by)."""
    return f"ACC{cfg.seed % 1000:03d}{study.index:06d}"


def _identity(study: StudyPlan) -> tuple[str, str, str]:
    """Fake but realistic PatientName, PatientID, PatientBirthDate for a synthetic patient."""
    i = study.patient_index
    name = f"{_FAMILY[i % len(_FAMILY)]}^{_GIVEN[(i * 7) % len(_GIVEN)]}"
    birth = dt.date(1940, 1, 1) + dt.timedelta(days=(i * 4111) % 25000)
    return name, f"MRN{100000 + i * 37:07d}", birth.strftime("%Y%m%d")


def _dicom_dataset(
    cfg: SynthConfig, study: StudyPlan, view_index: int, image: np.ndarray
) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    sop_uid = generate_uid(entropy_srcs=[f"mura-synth:{cfg.seed}:{study.index}:{view_index}"])
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    name, patient_id, birth = _identity(study)
    date = (dt.date(2024, 1, 1) + dt.timedelta(days=(study.seed % 700))).strftime("%Y%m%d")
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = name, patient_id, birth
    ds.PatientSex = "F" if study.patient_index % 2 else "M"
    ds.StudyInstanceUID = study_uid(cfg, study)
    ds.SeriesInstanceUID = generate_uid(
        entropy_srcs=[f"mura-synth:{cfg.seed}:{study.index}:series:{view_index}"]
    )
    ds.SOPClassUID, ds.SOPInstanceUID = DigitalXRayImageStorageForPresentation, sop_uid
    ds.AccessionNumber = accession_number(cfg, study)
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = f"{8 + study.index % 10:02d}{study.index % 60:02d}00"
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = str(study.study_number), view_index + 1, 1
    ds.Modality, ds.PresentationIntentType = "DX", "FOR PRESENTATION"
    ds.Manufacturer, ds.InstitutionName = "SYNTHETIC", "MURA SYNTH GENERAL HOSPITAL"
    description = f"XR {_BODY_PART_EXAMINED[study.body_part]} {len(study.views)} VIEWS"
    ds.StudyDescription = description
    ds.SeriesDescription = f"{_VIEW_POSITIONS[view_index % 4]} {description[3:]}"
    # One study in four leaves BodyPartExamined empty: the source must fall back to keywords.
    ds.BodyPartExamined = "" if study.index % 4 == 3 else _BODY_PART_EXAMINED[study.body_part]
    ds.ViewPosition = _VIEW_POSITIONS[view_index % 4]
    ds.ImageLaterality = "L" if study.seed % 2 else "R"

    monochrome1 = study.index % 2 == 1
    stored = np.rint((1.0 - image if monochrome1 else image) * 4095.0).astype(np.uint16)
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.SamplesPerPixel, ds.Rows, ds.Columns = 1, image.shape[0], image.shape[1]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    if study.index % 3 != 2:  # the rest carry no window: decoders use robust percentiles
        lo, hi = np.percentile(stored, [0.5, 99.5])
        ds.WindowCenter, ds.WindowWidth = int((lo + hi) / 2), max(2, int(hi - lo))
    ds.PixelData = stored.tobytes()
    if study.index % 5 == 4:
        ds.compress(RLELossless)
    return ds


def write_dicom_study(
    root: Path, cfg: SynthConfig, study: StudyPlan, images: list[np.ndarray]
) -> list[str]:
    """PatientID/StudyDate_Accession/SeriesN/IMn[.dcm]; some files have no suffix (as PACS)."""
    rels = []
    for view, image in zip(study.views, images, strict=True):
        ds = _dicom_dataset(cfg, study, view.index, image)
        suffix = "" if (study.index + view.index) % 3 == 0 else ".dcm"
        rel = (
            f"{ds.PatientID}/{ds.StudyDate}_{ds.AccessionNumber}/"
            f"series{view.index + 1}/IM{view.index + 1:04d}{suffix}"
        )
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        pydicom.dcmwrite(root / rel, ds, enforce_file_format=True)
        rels.append(rel)
    return rels


def write_dicom_labels(root: Path, cfg: SynthConfig, studies: tuple[StudyPlan, ...]) -> None:
    """labels.csv beside the tree: DICOM carries no ground truth, the synthesizer does."""
    with (root / DICOM_LABELS).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["study_instance_uid", "label"])
        for study in studies:
            writer.writerow([study_uid(cfg, study), study.label])
