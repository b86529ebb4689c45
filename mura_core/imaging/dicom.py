"""DICOM → display-ready uint8 grayscale frames.

The order follows the DICOM grayscale pipeline (PS3.4 N.2): stored values → Modality LUT /
rescale → VOI LUT or window → Presentation (MONOCHROME1 / INVERSE means high values are
dark, so invert: bone must be bright whatever the vendor stored). Every branch taken is
recorded in `DecodeInfo`, so a surprising image can be explained from its manifest row.

Bounds, in order: the file is parsed by `dicom_header.read_dataset_bounded` (reads clamped
and counted; a deflated dataset inflated only as far as its header's geometry needs);
`check_geometry` holds frames × rows × columns × samples to the pixel limit; a compressed
frame whose codestream declares more pixels than the header is refused before a plugin
allocates for it. With `work_side`, each frame's integer pixels are block-averaged
(`block_mean`) before the Modality and VOI LUTs, so the float pipeline runs at the working
size, never at full resolution (PALETTE COLOR is not averaged: its values are indices).
"""

from __future__ import annotations

import struct
import warnings
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.uid import UID

from mura_core.imaging.dicom_header import PARSE_ERRORS, check_geometry, read_dataset_bounded
from mura_core.imaging.dicom_header import (
    read_header as read_header,  # listing's entry point, re-exported
)
from mura_core.imaging.errors import (
    CorruptFileError,
    NotAnImageError,
    UnsupportedImageError,
    UnsupportedTransferSyntaxError,
)
from mura_core.imaging.geometry import block_mean, shrink_factor
from mura_core.imaging.intensity import (
    linear_window,
    luminance,
    percentile_window,
    range_window,
    sigmoid_window,
)
from mura_core.imaging.types import Decoded, DecodeInfo

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
# What pydicom's LUT functions raise on damaged descriptors and tables (OverflowError: a
# first mapped value that does not fit the pixels' dtype).
LUT_ERRORS = (
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    AttributeError,
    OverflowError,
    struct.error,
)
# JPEG start-of-frame markers (SOF0-SOF15 but DHT, JPG and DAC) and JPEG-LS SOF55
_JPEG_SOF = frozenset({*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC} | {0xF7})
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


def _parse(data: bytes, max_pixels: int) -> Dataset:
    force = not looks_like_dicom(data[:132])
    ds = read_dataset_bounded(data, force=force, max_pixels=max_pixels)
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


def _transfer_syntax(ds: Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if not uid:
        return None
    uid = UID(str(uid))
    if not uid.is_transfer_syntax:  # a SOP class or any other UID: pydicom raises on it
        raise UnsupportedTransferSyntaxError(
            f"Transfer Syntax UID {str(uid)[:64]!r} is not a transfer syntax pydicom knows"
        )
    return uid


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


def _number(ds: Dataset, keyword: str, default: float) -> float:
    """A single finite number (RescaleSlope/Intercept); empty means `default`."""
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise CorruptFileError(f"DICOM {keyword} is not a number: {str(value)[:40]!r}") from exc
    if not np.isfinite(number):
        raise CorruptFileError(f"DICOM {keyword} is not finite: {number}")
    return number


def _lut_bits(descriptor: Any, what: str) -> int:
    """The bit depth (third value) of a LUT descriptor: 1..16 per PS3.3 C.11."""
    try:
        bits = int(descriptor[2])
    except (TypeError, ValueError, IndexError) as exc:
        raise CorruptFileError(f"{what} descriptor unreadable: {descriptor!r}"[:200]) from exc
    if not 1 <= bits <= 16:
        raise CorruptFileError(f"{what} descriptor gives {bits} bits (1..16 allowed)")
    return bits


def _modality(ds: Dataset, frame: np.ndarray) -> np.ndarray:
    """Modality LUT or rescale (PS3.3 C.11.1), as pydicom's apply_modality_lut, with damaged
    values refused instead of raised from inside numpy."""
    if ds.get("ModalityLUTSequence"):
        _lut_bits(ds.ModalityLUTSequence[0].get("LUTDescriptor"), "Modality LUT")
        try:
            return apply_modality_lut(frame, ds)
        except LUT_ERRORS as exc:
            raise CorruptFileError(f"Modality LUT unusable ({type(exc).__name__}: {exc})") from exc
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope = _number(ds, "RescaleSlope", 1.0)
        return frame.astype(np.float64) * slope + _number(ds, "RescaleIntercept", 0.0)
    return frame


def _voi_lut(ds: Dataset, values: np.ndarray) -> np.ndarray:
    bits = _lut_bits(ds.VOILUTSequence[0].get("LUTDescriptor") or [0, 0, 16], "VOI LUT")
    try:
        out = apply_voi_lut(
            values.astype(np.float64) if values.dtype.kind == "f" else values,
            ds,
            index=0,
            prefer_lut=True,
        )
    except LUT_ERRORS as exc:
        raise CorruptFileError(f"VOI LUT unusable ({type(exc).__name__}: {exc})") from exc
    return range_window(out, 0.0, float(2**bits - 1))


def _gray_to_unit(ds: Dataset, frame: np.ndarray) -> tuple[np.ndarray, str]:
    """Modality LUT then VOI (LUT, window, or robust percentiles) → floats in [0, 1]."""
    values = _modality(ds, frame)
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        return _voi_lut(ds, values), "voi_lut"
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
        for colour in ("Red", "Green", "Blue"):
            descriptor = ds.get(f"{colour}PaletteColorLookupTableDescriptor")
            _lut_bits(descriptor, f"{colour} palette")
        try:
            frame = apply_color_lut(frame, ds)
        except LUT_ERRORS as exc:
            raise CorruptFileError(f"palette unusable ({type(exc).__name__}: {exc})") from exc
        bits = 16 if frame.dtype.itemsize > 1 else 8
    else:
        bits = int(ds.get("BitsStored") or ds.BitsAllocated)
        if not 1 <= bits <= 32:
            raise CorruptFileError(f"DICOM BitsStored {bits} is not between 1 and 32")
    return range_window(luminance(frame), 0.0, float(2**bits - 1))


def _declared_size(fragment: bytes) -> tuple[int, int, int] | None:
    """(rows, columns, components) a frame's JPEG / JPEG-LS / JPEG 2000 codestream declares
    in its SOF / SIZ marker, or None when the fragment does not start a codestream."""
    if fragment[:4] == b"\x00\x00\x00\x0c" and fragment[4:8] == b"jP  ":
        fragment = _jp2_codestream(fragment)
    if fragment[:4] == b"\xff\x4f\xff\x51" and len(fragment) >= 42:
        x, y, x0, y0 = struct.unpack(">4L", fragment[8:24])
        return y - y0, x - x0, int.from_bytes(fragment[40:42], "big")
    if fragment[:2] != b"\xff\xd8":
        return None
    offset = 2
    while offset + 9 <= len(fragment):
        if fragment[offset] != 0xFF:
            return None
        marker = fragment[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
        elif marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", fragment[offset + 5 : offset + 9])
            components = fragment[offset + 9] if offset + 9 < len(fragment) else 1
            return (height, width, components) if height else None
        elif marker == 0xDA:  # start of scan without a frame header
            return None
        else:
            offset += 2 + int.from_bytes(fragment[offset + 2 : offset + 4], "big")
    return None


def _jp2_codestream(data: bytes) -> bytes:
    """The contiguous codestream box of a JP2 file; pydicom's own box walk loops forever on a
    box of length 0 or 1 before it, so those are refused here, before it runs."""
    offset = 12
    while offset + 8 <= len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        if data[offset + 4 : offset + 8] == b"jp2c":
            return data[offset + 8 :]
        if length < 8:
            raise CorruptFileError(f"JPEG 2000 (JP2) box of length {length} before the codestream")
        offset += length
    return b""


def _check_codestreams(ds: Dataset, ts: UID | None) -> None:
    """A compressed frame may not declare more pixels than the header: a plugin allocates
    for what its codestream declares (a 1 KB frame claiming 60000x60000 is a bomb)."""
    data = ds.get("PixelData")
    if ts is None or not ts.is_compressed or not isinstance(data, bytes):
        return
    rows, cols = int(ds.Rows), int(ds.Columns)
    samples = int(ds.get("SamplesPerPixel") or 1)
    try:
        fragments = list(generate_fragments(data))
    except PARSE_ERRORS as exc:
        raise CorruptFileError(f"encapsulated pixel data is damaged: {exc}") from exc
    for fragment in fragments:
        declared = _declared_size(fragment)
        if declared and declared[0] * declared[1] * declared[2] > rows * cols * samples:
            raise CorruptFileError(
                f"a compressed frame declares {declared[1]}x{declared[0]} px x {declared[2]} "
                f"component(s), more than the header's {cols}x{rows} x {samples}"
            )


def _check_samples(photometric: str, samples: int) -> None:
    """Grayscale and palette images have one sample per pixel (an RGB with one sample is
    read as gray, as before: mislabelled files exist)."""
    if samples != 1 and (photometric in _GRAY or photometric == "PALETTE COLOR"):
        raise CorruptFileError(f"{photometric} image with {samples} samples per pixel (not 1)")


def _frames(ds: Dataset, pixels: np.ndarray, n_frames: int) -> np.ndarray:
    samples = int(ds.get("SamplesPerPixel") or 1)
    frames = pixels if n_frames > 1 else pixels[np.newaxis]
    if frames.ndim != (4 if samples >= 3 else 3):
        raise CorruptFileError(f"pixel array shape {pixels.shape} does not match the header")
    return frames


def decode_dicom(data: bytes, *, max_pixels: int, work_side: int | None = None) -> Decoded:
    """Decode a DICOM Part 10 file (bytes) to uint8 grayscale frames, bone bright.

    `work_side`: average each frame's integer pixels down by an integer factor while its
    longer side stays >= work_side, before any LUT (see the module doc)."""
    ds = _parse(data, max_pixels)
    _check_is_image(ds)
    n_frames = check_geometry(ds, max_pixels)
    ts = _transfer_syntax(ds)
    _check_decodable(ds, ts)
    photometric = str(ds.PhotometricInterpretation).upper().strip()
    if photometric not in _GRAY | _COLOUR:
        raise UnsupportedImageError(f"photometric interpretation {photometric!r} not handled")
    samples = int(ds.get("SamplesPerPixel") or 1)
    _check_samples(photometric, samples)
    _check_codestreams(ds, ts)
    frames = _frames(ds, _decode_pixels(ds, ts), n_frames)
    is_colour = photometric in _COLOUR and (samples >= 3 or photometric == "PALETTE COLOR")
    height, width = int(ds.Rows), int(ds.Columns)
    factor = 1 if photometric == "PALETTE COLOR" else shrink_factor(height, width, work_side)
    inverse = str(ds.get("PresentationLUTShape", "")).upper() == "INVERSE"
    invert = (photometric == "MONOCHROME1") != inverse
    out: list[np.ndarray] = []
    windowing = "colour"
    for full in frames:
        frame = block_mean(full, factor)
        if is_colour:
            unit = _colour_to_unit(ds, frame, photometric)
        else:
            unit, windowing = _gray_to_unit(ds, frame)
        out.append(1.0 - unit if invert else unit)
    info = DecodeInfo(
        format="dicom",
        photometric=photometric,
        bits_stored=int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8),
        transfer_syntax=str(ts) if ts else None,
        windowing=windowing,
        inverted=invert,
        height=height,
        width=width,
    )
    return Decoded.from_unit(out, info)
