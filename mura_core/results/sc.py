"""Secondary Captures of a flagged study: the original beside its Grad-CAM overlay, bannered."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache, partial
from pathlib import Path

import highdicom as hd
import matplotlib
import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont

from mura_core.cam import overlay
from mura_core.results.content import (
    BANNER_TEXT,
    RESULT_MANUFACTURER,
    SC_SERIES_DESCRIPTION,
    SC_SERIES_NUMBER,
    UNREGISTERED,
    ModelIdentity,
    ScPicture,
    StudyFinding,
)
from mura_core.results.equipment import ai_equipment, frame_numbers, source_header
from mura_core.results.uids import result_uid

# Pillow's built-in FreeType font (Aileron) has no "—" glyph (it draws the missing-glyph
# box); DejaVu Sans, shipped inside matplotlib, has it.
_FONT_PATH = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"
_BANNER_BACKGROUND = (0, 0, 0)
_BANNER_COLOUR = (255, 214, 0)


@lru_cache(maxsize=32)
def banner_font(size: int) -> ImageFont.FreeTypeFont:
    """The banner's font at `size` px (DejaVu Sans Bold: it has the em dash)."""
    return ImageFont.truetype(str(_FONT_PATH), size)


def _banner(width: int, height: int, texts: Sequence[str]) -> np.ndarray:
    """A (height, width, 3) strip with the first of `texts` (longest first) that fits at a
    readable size; the last one shrinks down to 6 px (and is clipped below that)."""
    image = Image.new("RGB", (width, height), _BANNER_BACKGROUND)
    draw = ImageDraw.Draw(image)
    pad = max(2, height // 5)

    def fitting(text: str, smallest: int) -> int | None:
        for size in range(max(smallest, int(height * 0.7)), smallest - 1, -1):
            if draw.textlength(text, font=banner_font(size)) <= width - 2 * pad:
                return size
        return None

    text, size = texts[-1], 6
    for candidate in texts:
        last = candidate is texts[-1]
        found = fitting(candidate, 6 if last else max(7, height // 2))
        if found is not None:
            text, size = candidate, found
            break
    draw.text((pad, height / 2), text, font=banner_font(size), fill=_BANNER_COLOUR, anchor="lm")
    return np.asarray(image)


def sc_canvas(picture: ScPicture, model: ModelIdentity) -> np.ndarray:
    """The SC's pixels: banner on top, original (left) beside its CAM overlay (right)."""
    pixels = np.asarray(picture.pixels)
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError(f"picture pixels must be uint8 (H, W), got {pixels.dtype} {pixels.shape}")
    cam = np.asarray(picture.cam, dtype=np.float64)
    if cam.ndim != 2:
        raise ValueError(f"the CAM must be a 2-D map, got shape {cam.shape}")
    height, width = pixels.shape
    version = f"v{model.version}" if model.version is not None else UNREGISTERED
    texts = (
        f"{BANNER_TEXT}   p(abnormal) = {picture.probability:.3f}   {model.name} {version}",
        f"{BANNER_TEXT}   p = {picture.probability:.3f}",
    )
    band = _banner(2 * width, max(16, height // 12), texts)
    left = np.repeat(pixels[..., None], 3, axis=2)
    return np.concatenate([band, np.concatenate([left, overlay(pixels, cam)], axis=1)], axis=0)


def _secondary_capture(
    picture: ScPicture, model: ModelIdentity, number: int, series_uid: str, sop_uid: str
) -> hd.sc.SCImage:
    header = source_header(picture.source)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=header,
        pixel_array=sc_canvas(picture, model),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=series_uid,
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=sop_uid,
        instance_number=number,
        manufacturer=RESULT_MANUFACTURER,
        patient_orientation=("L", "F"),  # replaced below: see the comment there
        contributing_equipment=[ai_equipment(model)],
        series_description=SC_SERIES_DESCRIPTION,
        manufacturer_model_name=model.name,
        software_versions=model.software_version,
    )
    # SCImage has no typed API for these three. PatientOrientation: highdicom insists on two
    # single letters; both panels keep the source's orientation, so copy it (or leave it
    # empty, Type 2 "unknown", when the source has none). BurnedInAnnotation: the banner.
    # SourceImageSequence: the image this capture was derived from.
    sc.PatientOrientation = header.get("PatientOrientation", "")
    sc.BurnedInAnnotation = "YES"
    reference = pydicom.Dataset()
    reference.ReferencedSOPClassUID = header.SOPClassUID
    reference.ReferencedSOPInstanceUID = header.SOPInstanceUID
    frames = frame_numbers(header, picture.frame)
    if frames is not None:
        reference.ReferencedFrameNumber = frames[0]
    sc.SourceImageSequence = [reference]
    return sc


def build_secondary_captures(
    finding: StudyFinding, model: ModelIdentity, pictures: Sequence[ScPicture]
) -> list[hd.sc.SCImage]:
    """One Secondary Capture per picture of a flagged study, numbered as its image in the
    study (`finding.images` order), in one series with deterministic UIDs."""
    if not finding.flagged:
        raise ValueError(f"study {finding.study_uid} is not flagged: no Secondary Capture")
    numbers = finding.image_numbers()
    uid = partial(result_uid, finding.study_uid, finding.instance_set, model.key)
    captures, seen = [], set()
    for picture in pictures:
        key = (str(picture.source.SOPInstanceUID), picture.frame)
        if key not in numbers or key in seen:
            raise ValueError(f"picture of {key[0]} frame {key[1]}: not a scored image, or twice")
        seen.add(key)
        number = numbers[key]
        sop_uid = uid("sc", number)
        captures.append(_secondary_capture(picture, model, number, uid("sc-series"), sop_uid))
    return captures
