"""PNG / JPEG (the MURA release is PNG) → uint8 grayscale frames."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from .errors import CorruptFileError, ImageTooLargeError, UnsupportedImageError
from .intensity import luminance, percentile_window
from .types import Decoded, DecodeInfo

# PIL's own decompression-bomb guard stays on (None would disable it): our explicit limit
# is checked first, PIL's applies to anything that slips past (e.g. inside a container).
if Image.MAX_IMAGE_PIXELS is None:
    Image.MAX_IMAGE_PIXELS = 89_478_485


def _frame_to_unit(frame: Image.Image) -> tuple[np.ndarray, str, int]:
    """One PIL frame → floats in [0, 1], the windowing used, and the source bit depth."""
    mode = frame.mode
    if mode in ("L", "LA", "1", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        if mode in ("L", "LA", "1"):
            gray = np.asarray(frame.convert("L"), dtype=np.float64)
            return gray / 255.0, "none", 8
        rgb = np.asarray(frame.convert("RGB"))
        return luminance(rgb) / 255.0, "colour", 8
    if mode.startswith("I;16") or mode == "I":
        # 16-bit PNGs often hold 10-12 bit detector data in a 16-bit container: mapping the
        # full 0..65535 range would give a black image, so use robust percentiles (loudly:
        # the windowing is recorded as 'percentile').
        values = np.asarray(frame, dtype=np.float64)
        return percentile_window(values), "percentile", 16
    if mode == "F":
        return percentile_window(np.asarray(frame, dtype=np.float64)), "percentile", 32
    raise UnsupportedImageError(f"image mode {mode!r} not handled")


def decode_pil(data: bytes, *, max_pixels: int) -> Decoded:
    """Decode PNG/JPEG bytes; refuse bombs before decoding and truncation while decoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            fmt = (image.format or "unknown").lower()
            width, height = image.size
            n_frames = int(getattr(image, "n_frames", 1) or 1)
            if width * height * n_frames > max_pixels:
                raise ImageTooLargeError(
                    f"{width}x{height} px x {n_frames} frame(s) = {width * height * n_frames:,}"
                    f" px exceeds the limit of {max_pixels:,} px"
                )
            frames, windowing, bits = [], "none", 8
            for page in ImageSequence.Iterator(image):
                page.load()
                upright = ImageOps.exif_transpose(page) if fmt == "jpeg" else page
                unit, windowing, bits = _frame_to_unit(upright)
                frames.append(unit)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"PIL decompression-bomb guard: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise CorruptFileError("not a readable PNG/JPEG image (unidentified format)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # truncated files: OSError('image file is truncated'); broken chunks: SyntaxError
        raise CorruptFileError(f"damaged image ({type(exc).__name__}: {exc})") from exc
    if not frames:
        raise CorruptFileError("image has no frames")
    h, w = frames[0].shape
    info = DecodeInfo(
        format=fmt,
        photometric="RGB" if windowing == "colour" else "MONOCHROME2",
        bits_stored=bits,
        transfer_syntax=None,
        windowing=windowing,
        inverted=False,
        height=h,
        width=w,
    )
    return Decoded.from_unit(frames, info)
