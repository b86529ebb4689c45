"""PNG / JPEG (the MURA release is PNG) → uint8 grayscale frames.

The recipe: only PIL's PNG and JPEG plugins parse anything (a TIFF or GIF named .png is
refused); bombs are refused from the header (pixels × frames against the limit) before
decoding; with `work_side`, shrink while decoding so that no full-resolution float copy is
made: a JPEG is decoded at 1/2, 1/4 or 1/8 scale (`Image.draft`, DCT scaling), then every
frame is reduced by an integer factor in its integer mode (`Image.reduce` for 8-bit modes,
`block_mean` for 16/32-bit ones, which `reduce` does not take) while its longer side stays
>= `work_side`; only then are values mapped to [0, 1]. `DecodeInfo.height/width` are always
the original, upright size.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from mura_core.imaging.errors import CorruptFileError, ImageTooLargeError, UnsupportedImageError
from mura_core.imaging.geometry import block_mean, shrink_factor
from mura_core.imaging.intensity import luminance, percentile_window
from mura_core.imaging.types import Decoded, DecodeInfo

# PIL's own decompression-bomb guard stays on (None would disable it): our explicit limit
# is checked first, PIL's applies to anything that slips past (e.g. inside a container).
if Image.MAX_IMAGE_PIXELS is None:
    Image.MAX_IMAGE_PIXELS = 89_478_485

# Only these PIL plugins ever parse a file (MPO, multi-picture JPEG, opens through JPEG): a
# TIFF, GIF, PSD ... named .png is refused, not handed to a decoder nobody meant to expose.
_FORMATS = ("PNG", "JPEG")
_OTHER_MAGIC = (
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"RIFF", "RIFF (WebP?)"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
)
# Pixels of a 16/32-bit frame converted to numpy at once when it is shrunk.
_STRIP_PIXELS = 1 << 20
_GRAY_8 = frozenset({"L", "LA", "1"})
_COLOUR_8 = frozenset({"P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"})
_EXIF_ORIENTATION = 0x0112
# EXIF orientation → the numpy view that makes the image upright (as ImageOps.exif_transpose)
_UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def _frame_to_unit(frame: Image.Image, factor: int) -> tuple[np.ndarray, str, int]:
    """One PIL frame, shrunk by `factor` → floats in [0, 1], the windowing used, and the
    source bit depth."""
    mode = frame.mode
    if mode in _GRAY_8 or mode in _COLOUR_8:
        target = "L" if mode in _GRAY_8 else "RGB"
        image = frame if mode == target else frame.convert(target)
        if factor > 1:
            image = image.reduce(factor)
        if target == "L":
            return np.asarray(image, dtype=np.float64) / 255.0, "none", 8
        return luminance(np.asarray(image)) / 255.0, "colour", 8
    if mode.startswith("I;16") or mode in ("I", "F"):
        # 16-bit PNGs often hold 10-12 bit detector data in a 16-bit container: mapping the
        # full 0..65535 range would give a black image, so use robust percentiles (loudly:
        # the windowing is recorded as 'percentile').
        bits = 32 if mode == "F" else 16
        return percentile_window(_deep_block_mean(frame, factor)), "percentile", bits
    raise UnsupportedImageError(f"image mode {mode!r} not handled")


def _deep_block_mean(frame: Image.Image, factor: int) -> np.ndarray:
    """A 16/32-bit frame's block means, converted to numpy a strip of rows at a time (a
    whole-frame `np.asarray` would copy it twice more at full resolution)."""
    if factor <= 1:
        return np.asarray(frame)
    width, height = frame.size
    step = factor * max(1, _STRIP_PIXELS // (width * factor))
    strips = [
        block_mean(np.asarray(frame.crop((0, top, width, min(top + step, height)))), factor)
        for top in range(0, height, step)
    ]
    return np.concatenate(strips, axis=0)


def _other_format(data: bytes) -> str | None:
    """The name of a well-known image format that is not PNG or JPEG, by its magic bytes."""
    return next((name for magic, name in _OTHER_MAGIC if data.startswith(magic)), None)


def _orientation(image: Image.Image, fmt: str) -> int:
    """The EXIF orientation of a JPEG (1 = upright; other formats are left as stored)."""
    if fmt != "jpeg":
        return 1
    value = image.getexif().get(_EXIF_ORIENTATION, 1)
    return value if isinstance(value, int) and value in _UPRIGHT else 1


def _check_pixels(width: int, height: int, n_frames: int, max_pixels: int) -> None:
    if width * height * n_frames > max_pixels:
        raise ImageTooLargeError(
            f"{width}x{height} px x {n_frames} frame(s) = {width * height * n_frames:,}"
            f" px exceeds the limit of {max_pixels:,} px"
        )


def _decode_frames(
    image: Image.Image, fmt: str, orientation: int, work_side: int | None
) -> tuple[list[np.ndarray], str, int]:
    width, height = image.size
    factor = shrink_factor(height, width, work_side)
    if factor > 1 and fmt == "jpeg":
        image.draft(image.mode, (-(-width // factor), -(-height // factor)))
    frames, windowing, bits = [], "none", 8
    for page in ImageSequence.Iterator(image):
        page.load()
        unit, windowing, bits = _frame_to_unit(page, shrink_factor(*page.size[::-1], work_side))
        frames.append(_UPRIGHT[orientation](unit) if orientation != 1 else unit)
    return frames, windowing, bits


def decode_pil(data: bytes, *, max_pixels: int, work_side: int | None = None) -> Decoded:
    """Decode PNG/JPEG bytes; refuse bombs before decoding and truncation while decoding.

    `work_side`: shrink while decoding, the longer side kept >= work_side (module doc)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=_FORMATS)
            fmt = (image.format or "unknown").lower()
            width, height = image.size
            _check_pixels(width, height, int(getattr(image, "n_frames", 1) or 1), max_pixels)
            orientation = _orientation(image, fmt)
            frames, windowing, bits = _decode_frames(image, fmt, orientation, work_side)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"PIL decompression-bomb guard: {exc}") from exc
    except UnidentifiedImageError as exc:
        if other := _other_format(data):
            raise UnsupportedImageError(f"a {other} image: only PNG and JPEG are read") from exc
        raise CorruptFileError("not a readable PNG/JPEG image (unidentified format)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # truncated files: OSError('image file is truncated'); broken chunks: SyntaxError
        if "truncated" in str(exc):  # never half-decoded (PIL's LOAD_TRUNCATED_IMAGES is off)
            raise CorruptFileError(
                f"truncated image: the file ends before its image data does ({exc})"
            ) from exc
        raise CorruptFileError(f"damaged image ({type(exc).__name__}: {exc})") from exc
    if not frames:
        raise CorruptFileError("image has no frames")
    if orientation >= 5:
        width, height = height, width
    info = DecodeInfo(
        format=fmt,
        photometric="RGB" if windowing == "colour" else "MONOCHROME2",
        bits_stored=bits,
        transfer_syntax=None,
        windowing=windowing,
        inverted=False,
        height=height,
        width=width,
    )
    return Decoded.from_unit(frames, info)
