"""DICOM → display-ready uint8 grayscale frames.

The order follows the DICOM grayscale pipeline (PS3.4 N.2): stored values → Modality LUT /
rescale → VOI LUT or window → Presentation (MONOCHROME1 / INVERSE means high values are
dark, so invert: bone must be bright whatever the vendor stored). Every branch taken is
recorded in `DecodeInfo`, so a surprising image can be explained from its manifest row.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.uid import UID

from .errors import (
    CorruptFileError,
    ImageTooLargeError,
    NotAnImageError,
    UnsupportedImageError,
    UnsupportedTransferSyntaxError,
)
from .intensity import linear_window, luminance, percentile_window, range_window, sigmoid_window
from .types import Decoded, DecodeInfo

# Modalities that carry pixel data but are not pictures of anatomy a radiologist reads.
_NON_IMAGE_MODALITIES = {
    "RTPLAN",
    "RTSTRUCT",
    "RTRECORD",
    "RTDOSE",
    "SR",
    "KO",
    "PR",
    "REG",
    "ECG",
    "HD",
    "AU",
    "DOC",
    "SEG",
    "FID",
    "PLAN",
    "RWV",
}
_GRAY = {"MONOCHROME1", "MONOCHROME2"}
_COLOUR = {
    "RGB",
    "YBR_FULL",
    "YBR_FULL_422",
    "YBR_ICT",
    "YBR_RCT",
    "YBR_PARTIAL_420",
    "PALETTE COLOR",
}


def looks_like_dicom(head: bytes) -> bool:
    """True when the Part 10 preamble magic 'DICM' sits at offset 128."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def read_header(data: bytes | str, *, force: bool = False) -> Dataset:
    """Header only (stops before pixel data): cheap enough to list a whole archive."""
    src: Any = io.BytesIO(data) if isinstance(data, bytes) else data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(src, stop_before_pixels=True, force=force)


def _parse(data: bytes) -> Dataset:
    force = not looks_like_dicom(data[:132])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=force)
    except InvalidDicomError as exc:
        raise CorruptFileError(f"not a DICOM file: {exc}") from exc
    except Exception as exc:  # pydicom raises many types on damaged headers
        raise CorruptFileError(f"cannot parse DICOM header ({type(exc).__name__}: {exc})") from exc
    if force and "SOPClassUID" not in ds and "PixelData" not in ds:
        raise CorruptFileError("not a DICOM file: no 'DICM' preamble and no DICOM elements")
    return ds


def _sop_name(ds: Dataset) -> str:
    uid = ds.get("SOPClassUID")
    name = getattr(uid, "name", None) if uid is not None else None
    modality = ds.get("Modality")
    return " / ".join(str(x) for x in (name, modality) if x) or "unknown SOP class"


def _check_is_image(ds: Dataset) -> None:
    has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    if not has_pixels:
        raise NotAnImageError(f"DICOM without pixel data ({_sop_name(ds)})")
    modality = str(ds.get("Modality", "")).upper()
    if modality in _NON_IMAGE_MODALITIES:
        raise NotAnImageError(f"DICOM {modality} object is not a radiograph ({_sop_name(ds)})")
    for keyword in ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation"):
        if ds.get(keyword) in (None, ""):
            raise CorruptFileError(f"DICOM image is missing required element {keyword}")


def _check_size(ds: Dataset, max_pixels: int) -> None:
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (TypeError, ValueError) as exc:
        raise CorruptFileError(f"DICOM image geometry unreadable: {exc}") from exc
    if rows <= 0 or cols <= 0 or frames <= 0:
        raise CorruptFileError(f"DICOM image geometry invalid: {rows}x{cols}x{frames} frames")
    if rows * cols * frames > max_pixels:
        raise ImageTooLargeError(
            f"{cols}x{rows} px x {frames} frame(s) = {rows * cols * frames:,} px exceeds the "
            f"limit of {max_pixels:,} px"
        )


def _transfer_syntax(ds: Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return UID(str(uid)) if uid else None


def _check_decodable(ds: Dataset, ts: UID | None) -> None:
    if ts is None:
        raise CorruptFileError("DICOM file meta has no Transfer Syntax UID: pixel data unreadable")
    if not ts.is_compressed:
        return
    try:
        decoder = get_decoder(ts)
    except NotImplementedError as exc:
        raise UnsupportedTransferSyntaxError(
            f"transfer syntax {ts.name} ({ts}) has no pixel decoder in pydicom"
        ) from exc
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "no plugin"
        raise UnsupportedTransferSyntaxError(
            f"transfer syntax {ts.name} ({ts}) needs a plugin that is not installed: {missing}"
        )


def _decode_pixels(ds: Dataset, ts: UID | None) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ds.pixel_array
    except Exception as exc:  # decoders raise RuntimeError/ValueError/AttributeError/...
        text = " ".join(str(exc).split())
        if ts is not None and ts.is_compressed:
            lines = [ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()]
            first = lines[0] if lines else text
            refusals = [ln for ln in lines if "not support" in ln]
            if refusals or "not support" in text:
                raise UnsupportedTransferSyntaxError(
                    f"transfer syntax {ts.name} ({ts}): no installed plugin decodes "
                    f"it ({(refusals or [first])[0]})"
                ) from exc
            raise CorruptFileError(
                f"compressed pixel data ({ts.name}) is damaged: {first}"
            ) from exc
        raise CorruptFileError(f"pixel data unreadable ({type(exc).__name__}: {text})") from exc


def _first(value: Any) -> float:
    """Window center/width may be multi-valued: the first pair is the default view."""
    if isinstance(value, pydicom.multival.MultiValue | list | tuple):
        value = value[0]
    return float(value)


def _gray_to_unit(ds: Dataset, frame: np.ndarray) -> tuple[np.ndarray, str]:
    """Modality LUT then VOI (LUT, window, or robust percentiles) → floats in [0, 1]."""
    values = apply_modality_lut(frame, ds)
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        lut_item = ds.VOILUTSequence[0]
        out = apply_voi_lut(
            values.astype(np.float64) if values.dtype.kind == "f" else values,
            ds,
            index=0,
            prefer_lut=True,
        )
        descriptor = lut_item.get("LUTDescriptor") or [0, 0, 16]
        bits = int(descriptor[2]) if len(descriptor) > 2 else 16
        return range_window(out, 0.0, float(2**bits - 1)), "voi_lut"
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center not in (None, "") and width not in (None, ""):
        try:
            c, w = _first(center), _first(width)
        except (TypeError, ValueError, IndexError):
            c, w = 0.0, 0.0
        if w > 0:
            function = str(ds.get("VOILUTFunction", "LINEAR")).upper()
            if function == "SIGMOID":
                return sigmoid_window(values, c, w), "window_sigmoid"
            return linear_window(values, c, w, exact=function == "LINEAR_EXACT"), "window"
    return percentile_window(values), "percentile"


def _colour_to_unit(ds: Dataset, frame: np.ndarray, photometric: str) -> np.ndarray:
    if photometric == "PALETTE COLOR":
        frame = apply_color_lut(frame, ds)
        bits = 16 if frame.dtype.itemsize > 1 else 8
    else:
        bits = int(ds.get("BitsStored") or ds.BitsAllocated)
    return range_window(luminance(frame), 0.0, float(2**bits - 1))


def decode_dicom(data: bytes, *, max_pixels: int) -> Decoded:
    """Decode a DICOM Part 10 file (bytes) to uint8 grayscale frames, bone bright."""
    ds = _parse(data)
    _check_is_image(ds)
    _check_size(ds, max_pixels)
    ts = _transfer_syntax(ds)
    _check_decodable(ds, ts)
    photometric = str(ds.PhotometricInterpretation).upper().strip()
    if photometric not in _GRAY | _COLOUR:
        raise UnsupportedImageError(f"photometric interpretation {photometric!r} not handled")
    pixels = _decode_pixels(ds, ts)
    n_frames = int(ds.get("NumberOfFrames") or 1)
    samples = int(ds.get("SamplesPerPixel") or 1)
    is_colour = photometric in _COLOUR and (samples >= 3 or photometric == "PALETTE COLOR")
    frames = pixels if n_frames > 1 else pixels[np.newaxis]
    expected_ndim = 4 if samples >= 3 else 3
    if frames.ndim != expected_ndim:
        raise CorruptFileError(f"pixel array shape {pixels.shape} does not match the header")

    inverse = str(ds.get("PresentationLUTShape", "")).upper() == "INVERSE"
    invert = (photometric == "MONOCHROME1") != inverse
    out: list[np.ndarray] = []
    windowing = "colour"
    for frame in frames:
        if is_colour:
            unit = _colour_to_unit(ds, frame, photometric)
        else:
            unit, windowing = _gray_to_unit(ds, frame)
        if invert:
            unit = 1.0 - unit
        out.append(unit)
    info = DecodeInfo(
        format="dicom",
        photometric=photometric,
        bits_stored=int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8),
        transfer_syntax=str(ts) if ts else None,
        windowing=windowing,
        inverted=invert,
        height=int(ds.Rows),
        width=int(ds.Columns),
    )
    return Decoded.from_unit(out, info)
