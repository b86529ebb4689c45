"""Typed refusals: every input that cannot become pixels raises one of these.

Each carries `error_type` (a stable short code for quarantine tables) and a one-line `reason`
that a person can act on. Callers catch `ImagingError` per file and record it; nothing else
should escape `mura_core.imaging` for a bad file.
"""

from __future__ import annotations

from mura_core.errors import MuraError


def one_line(text: object, limit: int = 300) -> str:
    """Collapse whitespace so a reason always fits one log line / one table cell."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class ImagingError(MuraError):
    """Base class: this file cannot be turned into a grayscale image."""

    error_type = "imaging_error"

    def __init__(self, reason: str) -> None:
        self.reason = one_line(reason)
        super().__init__(self.reason)


class NotAnImageError(ImagingError):
    """A valid file that holds no picture: RT plan, structured report, waveform, ..."""

    error_type = "not_an_image"


class CorruptFileError(ImagingError):
    """Truncated, damaged, or not the format its name or header claims."""

    error_type = "corrupt"


class UnsupportedTransferSyntaxError(ImagingError):
    """DICOM pixel data in a compression that no installed plugin decodes."""

    error_type = "unsupported_transfer_syntax"


class UnsupportedImageError(ImagingError):
    """An image of a kind this tool does not handle (unknown format, odd photometric)."""

    error_type = "unsupported_image"


class ImageTooLargeError(ImagingError):
    """More pixels than the configured limit: refused before decoding (decompression bombs)."""

    error_type = "too_large"
