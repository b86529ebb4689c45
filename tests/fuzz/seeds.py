"""Seed files for the decoder fuzzer, and where their structure lies.

Each `Seed` is a real file: small PNGs and JPEGs made with PIL, and pydicom's own test files
in every transfer syntax the installed plugins decode (plus a deflated one, mutated both
inside its deflate stream and outside it). Besides the bytes, a seed lists its `fields`:
the length fields of PNG chunks, JPEG segments, DICOM elements and encapsulated items, and
the values a decoder sizes its work by (PNG IHDR, JPEG SOF, JPEG 2000 SIZ, DICOM Rows,
Columns, bits, frames ...), so that mutations hit the places where bombs and crashes live,
not only random bytes. DICOM elements are also listed whole (`elements`) so a mutation can
replace a value and its length together.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import data_element_generator, read_preamble, read_sequence
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32


@dataclass(frozen=True, slots=True)
class Field:
    """An integer in a file: `width` bytes at `offset`, big (`>`) or little (`<`) endian."""

    offset: int
    width: int
    order: str
    kind: str  # "length" or "value"


@dataclass(frozen=True, slots=True)
class Element:
    """A DICOM element whose value (at `value`, `length` bytes) may be replaced whole."""

    value: int
    length: int
    length_field: Field
    tag: int


@dataclass(frozen=True)
class Seed:
    """A real file to mutate; `finish` turns the mutated bytes into the file decoded (the
    deflated seed deflates its mutated dataset; PNGs may get their CRCs fixed)."""

    label: str
    name: str
    data: bytes = field(repr=False)
    fields: tuple[Field, ...] = field(default=(), repr=False)
    elements: tuple[Element, ...] = field(default=(), repr=False)
    finish: Callable[[bytes], bytes] | None = field(default=None, compare=False, repr=False)
    keep: int = 0  # leading bytes byte edits leave alone (the magic: breaking it is trivial)


# --- PNG -------------------------------------------------------------------------------


def png_chunks(data: bytes) -> list[tuple[int, int, bytes]]:
    """(offset, declared length, type) of each chunk, as far as the lengths hold."""
    chunks, offset = [], 8
    while offset + 8 <= len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        chunks.append((offset, length, data[offset + 4 : offset + 8]))
        offset += 12 + length
    return chunks


def fix_png_crcs(data: bytes) -> bytes:
    """Recompute every chunk's CRC (so mutations reach the decoder, not the CRC check)."""
    out = bytearray(data)
    for offset, length, _ in png_chunks(data):
        end = offset + 8 + length
        if end + 4 > len(out):
            break
        out[end : end + 4] = struct.pack(">I", zlib.crc32(out[offset + 4 : end]) & 0xFFFFFFFF)
    return bytes(out)


def png_fields(data: bytes) -> tuple[Field, ...]:
    fields = [Field(offset, 4, ">", "length") for offset, _, _ in png_chunks(data)]
    # IHDR: width, height (4 bytes each), bit depth, colour type, interlace (1 byte each)
    fields += [Field(16, 4, ">", "value"), Field(20, 4, ">", "value")]
    fields += [Field(24, 1, ">", "value"), Field(25, 1, ">", "value"), Field(28, 1, ">", "value")]
    return tuple(fields)


# --- JPEG ------------------------------------------------------------------------------

_SOF = {*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC} | {0xF7}


def jpeg_fields(data: bytes, base: int = 0) -> list[Field]:
    """Segment lengths up to the first scan, and the frame header's size and components."""
    fields, offset = [], 2
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            offset += 2
            continue
        fields.append(Field(base + offset + 2, 2, ">", "length"))
        if marker in _SOF:
            for at, width in ((5, 2), (7, 2), (9, 1), (11, 1)):
                fields.append(Field(base + offset + at, width, ">", "value"))
        if marker == 0xDA:
            break
        offset += 2 + int.from_bytes(data[offset + 2 : offset + 4], "big")
    return fields


def j2k_fields(data: bytes, base: int) -> list[Field]:
    """JPEG 2000 SIZ: Lsiz, Xsiz, Ysiz, XOsiz, YOsiz, XTsiz, YTsiz, Csiz."""
    if data[:4] != b"\xff\x4f\xff\x51":
        return []
    fields = [Field(base + 4, 2, ">", "length"), Field(base + 40, 2, ">", "value")]
    return fields + [Field(base + at, 4, ">", "value") for at in range(8, 32, 4)]


# --- DICOM -----------------------------------------------------------------------------

# Elements whose values size or steer the decode: geometry, bits, colour, windows, syntax.
INTERESTING_TAGS = frozenset(
    {
        0x00020010,  # TransferSyntaxUID
        0x00280002,  # SamplesPerPixel
        0x00280004,  # PhotometricInterpretation
        0x00280006,  # PlanarConfiguration
        0x00280008,  # NumberOfFrames
        0x00280010,  # Rows
        0x00280011,  # Columns
        0x00280100,  # BitsAllocated
        0x00280101,  # BitsStored
        0x00280102,  # HighBit
        0x00280103,  # PixelRepresentation
        0x00281050,  # WindowCenter
        0x00281051,  # WindowWidth
        0x00281052,  # RescaleIntercept
        0x00281053,  # RescaleSlope
        0x00282110,  # LossyImageCompression
        0x00281054,  # RescaleType
        0x00281056,  # VOILUTFunction
        0x00282050,  # PresentationLUTShape
        0x00281101,  # Red Palette Color LUT Descriptor
        0x00281102,  # Green Palette Color LUT Descriptor
        0x00281103,  # Blue Palette Color LUT Descriptor
        0x00281201,  # Red Palette Color LUT Data
        0x00283002,  # LUTDescriptor (in Modality / VOI LUT Sequence items)
        0x00283006,  # LUTData
    }
)


def _element_spans(
    data: bytes, start: int, *, implicit: bool, little: bool, meta: bool
) -> tuple[list[Field], list[Element], int]:
    """Fields and elements of a dataset in `data` from `start`; also where it ended."""
    fp = DicomBytesIO(data)
    fp.seek(start)
    stop = (lambda tag, vr, length: tag >> 16 != 2) if meta else None
    elems = list(data_element_generator(fp, implicit, little, stop_when=stop))
    fields, elements = _spans(elems, data, implicit, little)
    return fields, elements, fp.tell()


def _spans(
    elems: list, data: bytes, implicit: bool, little: bool
) -> tuple[list[Field], list[Element]]:
    """Fields and elements of parsed elements, into sequence items (their LUTs, ...)."""
    order = "<" if little else ">"
    fields: list[Field] = []
    elements: list[Element] = []
    for elem in elems:
        value_at = getattr(elem, "value_tell", None) or getattr(elem, "file_tell", None)
        if value_at is None:
            continue
        vr, tag = getattr(elem, "VR", None), int(elem.tag)
        size = getattr(elem, "length", 0xFFFFFFFF)  # a parsed sequence: undefined length
        long = implicit or vr in EXPLICIT_VR_LENGTH_32
        length = Field(value_at - (4 if long else 2), 4 if long else 2, order, "length")
        fields.append(length)
        if tag in INTERESTING_TAGS and size != 0xFFFFFFFF:
            elements.append(Element(value_at, size, length, tag))
            if vr in ("US", "SS", "UL", "SL") or (implicit and size in (2, 4)):
                fields.append(Field(value_at, min(size, 4), order, "value"))
        if tag == 0x7FE00010 and size == 0xFFFFFFFF:
            fields += _fragment_fields(data, value_at)
        for item in _items(elem, data, value_at, implicit, little):
            more_fields, more_elements = _spans(list(item._dict.values()), data, implicit, little)
            fields += more_fields
            elements += more_elements
    return fields, elements


def _items(elem: object, data: bytes, at: int, implicit: bool, little: bool) -> list:
    """The items of a sequence element (parsed already, or parsed here from `data`)."""
    value = getattr(elem, "value", None)
    if isinstance(value, pydicom.Sequence):
        return list(value)
    if getattr(elem, "VR", None) != "SQ":
        return []
    fp = DicomBytesIO(data)
    fp.seek(at)
    return list(read_sequence(fp, implicit, little, elem.length, "iso8859"))  # type: ignore[attr-defined]


def _fragment_fields(data: bytes, offset: int) -> list[Field]:
    """Item lengths of encapsulated pixel data, and each fragment's codestream fields."""
    fields = []
    while offset + 8 <= len(data):
        tag = struct.unpack("<HH", data[offset : offset + 4])
        if tag != (0xFFFE, 0xE000):
            break
        length = int.from_bytes(data[offset + 4 : offset + 8], "little")
        fields.append(Field(offset + 4, 4, "<", "length"))
        fragment = data[offset + 8 : offset + 8 + length]
        if fragment[:2] == b"\xff\xd8":
            fields += jpeg_fields(fragment, base=offset + 8)
        fields += j2k_fields(fragment, base=offset + 8)
        offset += 8 + length
    return fields


def dicom_seed(label: str, data: bytes, finish: Callable[[bytes], bytes] | None = None) -> Seed:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    syntax = ds.file_meta.get("TransferSyntaxUID")
    fp = DicomBytesIO(data)
    start = 132 if read_preamble(fp, True) is not None else 0
    meta_fields, meta_elements, end = _element_spans(
        data, start, implicit=False, little=True, meta=True
    )
    implicit = syntax == pydicom.uid.ImplicitVRLittleEndian
    little = syntax != pydicom.uid.ExplicitVRBigEndian
    fields, elements, _ = _element_spans(data, end, implicit=implicit, little=little, meta=False)
    return Seed(
        label,
        f"{label}.dcm",
        data,
        tuple(meta_fields + fields),
        tuple(meta_elements + elements),
        finish,
        keep=start,
    )


def deflated_inside_seed() -> Seed:
    """pydicom's deflated file, its dataset mutated before deflating it again."""
    data = Path(get_testdata_file("image_dfl.dcm")).read_bytes()
    fp = DicomBytesIO(data)
    read_preamble(fp, False)
    _, _, end = _element_spans(data, 132, implicit=False, little=True, meta=True)
    prefix, body = data[:end], zlib.decompress(data[end:], -zlib.MAX_WBITS)
    fields, elements, _ = _element_spans(body, 0, implicit=False, little=True, meta=False)

    def deflate(mutated: bytes) -> bytes:
        packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        return prefix + packer.compress(mutated) + packer.flush()

    return Seed("dfl_inside", "dfl_inside.dcm", body, tuple(fields), tuple(elements), deflate)


# --- the seed sets ---------------------------------------------------------------------

DICOM_FILES = {
    "explicit_le": "MR_small.dcm",
    "implicit_le": "MR_small_implicit.dcm",
    "big_endian": "MR_small_bigendian.dcm",
    "rgb_explicit": "SC_rgb_small_odd.dcm",
    "rle": "MR_small_RLE.dcm",
    "rle_rgb_2frame": "SC_rgb_rle_2frame.dcm",
    "jpeg2000": "MR_small_jp2klossless.dcm",
    "jpeg_ls": "MR_small_jpeg_ls_lossless.dcm",
    "jpeg_lossless_rgb": "SC_rgb_jpeg_gdcm.dcm",
    "jpeg_baseline_ybr": "SC_rgb_dcmtk_+eb+cy+s2.dcm",
    "jpeg_extended_12bit": "JPEG-lossy.dcm",
    "deflated": "image_dfl.dcm",
}


def _png(pixels: np.ndarray, mode: str | None = None, **options: object) -> bytes:
    out = io.BytesIO()
    image = Image.fromarray(pixels) if mode is None else Image.fromarray(pixels).convert(mode)
    image.save(out, format="PNG", **options)
    return out.getvalue()


def _jpeg(pixels: np.ndarray, **options: object) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", **options)
    return out.getvalue()


def _apng(frames: list[np.ndarray]) -> bytes:
    out = io.BytesIO()
    images = [Image.fromarray(f) for f in frames]
    images[0].save(out, format="PNG", save_all=True, append_images=images[1:])
    return out.getvalue()


@cache
def image_seeds() -> tuple[Seed, ...]:
    gray = (np.arange(24 * 16).reshape(16, 24) * 7 % 256).astype(np.uint8)
    deep = (np.arange(20 * 12).reshape(12, 20) * 131 % 4096).astype(np.uint16)
    rgb = np.stack([gray, gray[::-1], 255 - gray], axis=-1)
    exif = Image.Exif()
    exif[0x0112] = 6
    pngs = {
        "png_gray": _png(gray),
        "png_16bit": _png(deep),
        "png_rgb": _png(rgb),
        "png_palette": _png(rgb, "P"),
        "png_rgba": _png(rgb, "RGBA"),
        "png_animated": _apng([gray, 255 - gray]),
    }
    jpegs = {
        "jpeg_gray": _jpeg(np.tile(gray, (2, 2)), quality=90),
        "jpeg_rgb": _jpeg(np.tile(rgb, (2, 2, 1)), quality=80, subsampling=2),
        "jpeg_progressive": _jpeg(np.tile(gray, (2, 2)), progressive=True),
        "jpeg_exif": _jpeg(np.tile(gray, (2, 2)), exif=exif),
    }
    seeds = [Seed(k, f"{k}.png", v, png_fields(v), keep=8) for k, v in pngs.items()]
    seeds += [Seed(k, f"{k}.jpg", v, tuple(jpeg_fields(v)), keep=2) for k, v in jpegs.items()]
    return tuple(seeds)


def _saved(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _cropped(name: str, side: int = 16) -> pydicom.Dataset:
    """One of pydicom's files cut to side x side native pixels (LUTs and palettes kept)."""
    ds = pydicom.dcmread(get_testdata_file(name))
    pixels = np.ascontiguousarray(ds.pixel_array[:side, :side])
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.PixelData = pixels.tobytes()
    return ds


def derived_seeds() -> list[Seed]:
    """Small files for the branches pydicom's small test files do not reach: VOI and
    Modality LUT sequences, a palette, a sigmoid window with rescale, MONOCHROME1 with an
    INVERSE presentation LUT, and a multi-frame RLE file."""
    sigmoid = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    sigmoid.VOILUTFunction = "SIGMOID"
    sigmoid.WindowCenter, sigmoid.WindowWidth = [600, 300], [1600, 800]
    sigmoid.RescaleSlope, sigmoid.RescaleIntercept = 2, -1024
    inverse = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    inverse.PhotometricInterpretation = "MONOCHROME1"
    inverse.PresentationLUTShape = "INVERSE"
    frames = _cropped("MR_small.dcm")
    stack = np.stack([frames.pixel_array + i for i in range(3)])
    frames.NumberOfFrames = 3
    frames.compress(pydicom.uid.RLELossless, stack)
    built = {
        "voi_lut": _cropped("vlut_04.dcm"),
        "modality_lut": _cropped("mlut_18.dcm"),
        "palette": _cropped("OBXXXX1A_rle.dcm"),
        "sigmoid_rescale": sigmoid,
        "monochrome1_inverse": inverse,
        "rle_3frame": frames,
    }
    return [dicom_seed(label, _saved(ds)) for label, ds in built.items()]


@cache
def dicom_seeds() -> tuple[Seed, ...]:
    seeds = [
        dicom_seed(label, Path(get_testdata_file(name)).read_bytes())
        for label, name in DICOM_FILES.items()
    ]
    return (*seeds, *derived_seeds(), deflated_inside_seed())
