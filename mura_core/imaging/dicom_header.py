"""Bounded DICOM parsing: what listing can afford for every file of an archive, and what
decode may inflate.

The recipe, for a header (`read_header`) and for a whole file (`read_dataset`):

1. The source (bytes, or a binary file object at the file's start) is wrapped in a
   `_BoundedReader`: a read never asks for more than what is left of the source (an element
   claiming 4 GB in a 26 KB file allocates nothing), and small reads (each element's header
   is one) are counted (`MAX_PARSE_READS`): a crafted file of millions of tiny elements is
   refused, not parsed for minutes into gigabytes of Python objects.
2. Preamble and file meta (group 0002, always Explicit VR Little Endian) with pydicom's own
   filereader helpers (`read_preamble`, `_read_file_meta_info`).
3. A deflated transfer syntax (the whole dataset is one deflate stream): pydicom would
   inflate all of it, and 1 MB can inflate to gigabytes. We inflate with
   `zlib.decompressobj(-zlib.MAX_WBITS)` and `max_length`: 64 KiB first, then up to
   `HEADER_BOUND`, parsing the prefix as Explicit VR Little Endian until the pixel data; a
   header that does not end inside the bound is refused (`ImageTooLargeError`). Decode then
   inflates at most what the header's geometry needs (`_pixel_bytes` + `HEADER_BOUND` +
   `INFLATE_SLACK`); a stream that goes on is refused too.
4. Any other transfer syntax: pydicom's `read_partial` (stop before pixels for a header).
5. Every element is converted at once (`_settle`): a damaged public element is a
   `CorruptFileError` here, not a pydicom exception wherever it is first read; a damaged
   private one is dropped.
6. `check_geometry`: frames × rows × columns × samples against the pixel limit, before
   anything is listed per frame, inflated or decoded.

Every failure is an `ImagingError`: `CorruptFileError` for what cannot be parsed,
`ImageTooLargeError` for what exceeds a bound (with the bound in the reason).
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from collections.abc import Callable
from typing import BinaryIO

from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info, read_dataset, read_partial, read_preamble
from pydicom.tag import BaseTag

from mura_core.imaging.errors import CorruptFileError, ImageTooLargeError

# Inflated bytes a deflated dataset's header (everything before the pixel data) may take:
# real headers are a few KiB; overlays and ICC profiles can reach a MiB or two.
HEADER_BOUND = 4 * 1024 * 1024
# Inflated bytes allowed beyond header + pixels (trailing padding, digital signatures).
INFLATE_SLACK = 1024 * 1024
# Small reads while parsing one file (1-3 per element): ~0.4 s, ~20 MB of elements at most;
# real headers take hundreds, an enhanced multi-frame header some 80 per frame (1,200 frames).
MAX_PARSE_READS = 100_000
# Transfer syntaxes whose dataset is one deflate stream (PS3.5 A.5; JPIP ...Deflate).
DEFLATED_TRANSFER_SYNTAXES = frozenset(
    {"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95", "1.2.840.10008.1.2.4.205"}
)

_SMALL_READ = 1024
_FIRST_PREFIX = 64 * 1024
_CHUNK = 64 * 1024
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})
# What pydicom raises on damaged bytes while parsing or converting an element's value
# (AttributeError: resolving an ambiguous VR looks up an element that is not there).
PARSE_ERRORS = (
    InvalidDicomError,
    AttributeError,
    BytesLengthException,
    OSError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    OverflowError,
    NotImplementedError,
    struct.error,
)

Source = bytes | BinaryIO


class _BoundedReader:
    """A binary source that never reads past its end and that counts its small reads (every
    element costs at least one, its header; big reads are bounded by the size already)."""

    def __init__(self, raw: BinaryIO, budget: int = MAX_PARSE_READS) -> None:
        self._raw, self._left, self.exhausted = raw, budget, False
        self._pos = raw.tell()
        self._end = raw.seek(0, os.SEEK_END)
        raw.seek(self._pos)
        if isinstance(name := getattr(raw, "name", None), str):
            self.name = name

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and 0 <= size < _SMALL_READ:  # element headers, small values
            if self._left <= 0:
                self.exhausted = True
                return b""
            self._left -= 1
        left = self._end - self._pos
        data = self._raw.read(left if size is None or size < 0 or size > left else size)
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._pos = self._raw.seek(offset, whence)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def check_budget(self) -> None:
        if self.exhausted:
            raise ImageTooLargeError(
                f"DICOM dataset holds too many elements: parsing stopped after "
                f"{MAX_PARSE_READS:,} reads (the limit)"
            )


def _reader(source: Source) -> _BoundedReader:
    if isinstance(source, bytes | bytearray | memoryview):
        return _BoundedReader(io.BytesIO(source))
    try:
        return _BoundedReader(source)
    except (OSError, ValueError, AttributeError) as exc:
        raise CorruptFileError(f"cannot read DICOM file: {exc}") from exc


class _Inflater:
    """Inflates a raw deflate stream read from `reader`, never beyond what is asked for."""

    def __init__(self, reader: _BoundedReader) -> None:
        self._reader, self._z = reader, zlib.decompressobj(-zlib.MAX_WBITS)
        self._chunks: list[bytes] = []
        self.size, self._input_done = 0, False

    @property
    def finished(self) -> bool:
        """The stream ended (or its input did): nothing more will come out."""
        return self._z.eof or (self._input_done and not self._z.unconsumed_tail)

    def inflate_to(self, limit: int) -> bytes:
        """The first `limit` inflated bytes (fewer when the stream ends first)."""
        while self.size < limit and not self.finished:
            data = self._z.unconsumed_tail
            if not data:
                data = self._reader.read(_CHUNK)
                self._input_done = not data
                if not data:
                    break
            try:
                out = self._z.decompress(data, limit - self.size)
            except zlib.error as exc:
                raise CorruptFileError(f"deflated DICOM dataset is damaged: {exc}") from exc
            self._chunks.append(out)
            self.size += len(out)
        joined = b"".join(self._chunks)
        self._chunks = [joined]
        return joined


def _parse_explicit_le(buffer: bytes, *, stop_before_pixels: bool) -> tuple[Dataset, bool]:
    """An inflated dataset (Explicit VR Little Endian) and whether its pixel data was met."""
    reached: list[bool] = []

    def at_pixels(tag: BaseTag, vr: str | None, length: int) -> bool:
        if tag in _PIXEL_TAGS:
            reached.append(True)
        return stop_before_pixels and bool(reached)

    reader = _BoundedReader(DicomBytesIO(buffer))
    stop: Callable[[BaseTag, str | None, int], bool] = at_pixels
    dataset = read_dataset(reader, is_implicit_VR=False, is_little_endian=True, stop_when=stop)
    reader.check_budget()
    return dataset, bool(reached)


def _file_dataset(
    buffer: bytes, dataset: Dataset, preamble: bytes | None, meta: FileMetaDataset
) -> FileDataset:
    ds = FileDataset(DicomBytesIO(buffer), dataset, preamble, meta, False, True)
    ds.set_original_encoding(False, True, dataset.original_character_set)
    return ds


def _deflated_header(
    inflater: _Inflater, preamble: bytes | None, meta: FileMetaDataset
) -> tuple[FileDataset, bool]:
    """The header of a deflated dataset from a bounded prefix, and whether the whole dataset
    is already inflated (no pixel data followed, the stream ended)."""
    failure: Exception | None = None
    for bound in (_FIRST_PREFIX, HEADER_BOUND):
        prefix = inflater.inflate_to(bound)
        try:
            dataset, complete = _parse_explicit_le(prefix, stop_before_pixels=True)
        except PARSE_ERRORS as exc:  # a prefix cut inside an element, or damage
            failure, complete = exc, False
        if complete or inflater.finished:
            if failure is not None:
                raise _corrupt(failure) from failure
            return _file_dataset(prefix, dataset, preamble, meta), not complete
        failure = None
    raise ImageTooLargeError(
        f"deflated DICOM header does not end within {HEADER_BOUND:,} inflated bytes "
        "(a decompression bomb or a damaged stream)"
    )


def _corrupt(exc: Exception) -> CorruptFileError:
    if isinstance(exc, InvalidDicomError):
        return CorruptFileError(f"not a DICOM file: {exc}")
    return CorruptFileError(f"cannot parse DICOM header ({type(exc).__name__}: {exc})")


def _start(source: Source, force: bool) -> tuple[_BoundedReader, int, bytes | None, Dataset]:
    """Reader, start offset, preamble and file meta of a source."""
    reader = _reader(source)
    start = reader.tell()
    preamble = read_preamble(reader, force)
    return reader, start, preamble, _read_file_meta_info(reader)


def _is_deflated(meta: Dataset) -> bool:
    return str(meta.get("TransferSyntaxUID", "")).strip("\x00 ") in DEFLATED_TRANSFER_SYNTAXES


def _read(source: Source, force: bool, header_only: bool, max_pixels: int) -> FileDataset:
    reader, start, preamble, meta = _start(source, force)
    if not _is_deflated(meta):
        reader.seek(start)
        stop = _at_pixels if header_only else None
        ds = read_partial(reader, stop, force=force)  # type: ignore[arg-type]
        reader.check_budget()
        return ds
    inflater = _Inflater(reader)
    header, whole = _deflated_header(inflater, preamble, FileMetaDataset(meta))
    if header_only or whole:
        return header
    need = _pixel_bytes(header, max_pixels) + HEADER_BOUND + INFLATE_SLACK
    data = inflater.inflate_to(need + 1)
    if len(data) > need:
        raise ImageTooLargeError(
            f"deflated dataset inflates beyond {need:,} bytes, more than its header's "
            "geometry needs (a decompression bomb)"
        )
    dataset, _ = _parse_explicit_le(data, stop_before_pixels=False)
    return _file_dataset(data, dataset, preamble, FileMetaDataset(meta))


def _at_pixels(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag in _PIXEL_TAGS


def _settle(ds: Dataset) -> None:
    """Convert every element now (pydicom converts lazily, on first access, where a damaged
    value would raise far from here): a private element that cannot be read is dropped (we
    never use one), a public one makes the file corrupt."""
    for tag in list(ds.keys()):
        try:
            elem = ds[tag]
            items = elem.value if elem.VR == "SQ" else ()
        except PARSE_ERRORS as exc:
            if tag.is_private:
                del ds[tag]
                continue
            raise CorruptFileError(
                f"DICOM element {tag} unreadable ({type(exc).__name__}: {exc})"
            ) from exc
        for item in items:
            _settle(item)


def _guarded(source: Source, force: bool, header_only: bool, max_pixels: int) -> FileDataset:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = _read(source, force, header_only, max_pixels)
            _settle(ds.file_meta)
            _settle(ds)
            return ds
    except PARSE_ERRORS as exc:
        raise _corrupt(exc) from exc


def read_header(source: Source | str | os.PathLike[str], *, force: bool = False) -> Dataset:
    """The header of a DICOM file (everything before the pixel data), at bounded cost.

    `source`: the file's bytes, or a binary file object positioned at its start (what
    `mura_core.archive` opens). A path is still accepted and opened here, for callers not
    yet moved to the archive layer. Raises `CorruptFileError` or `ImageTooLargeError`.
    """
    if isinstance(source, str | os.PathLike):
        try:
            with open(source, "rb") as handle:
                return _guarded(handle, force, True, 0)
        except OSError as exc:
            raise CorruptFileError(f"cannot read file: {exc.strerror or exc}") from exc
    return _guarded(source, force, True, 0)


def read_dataset_bounded(data: bytes, *, force: bool, max_pixels: int) -> FileDataset:
    """A whole DICOM file (pixel data included) for decoding; a deflated dataset is
    inflated to at most what its header's geometry (checked against `max_pixels`) needs."""
    return _guarded(data, force, False, max_pixels)


def _int(ds: Dataset, keyword: str, default: int | None) -> int | None:
    try:
        value = ds.get(keyword)
    except PARSE_ERRORS as exc:
        raise CorruptFileError(f"DICOM {keyword} unreadable ({type(exc).__name__})") from exc
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CorruptFileError(f"DICOM {keyword} is not an integer: {value!r}"[:200]) from exc


def check_geometry(ds: Dataset, max_pixels: int) -> int:
    """The number of frames, once frames × rows × columns × samples per pixel is known to
    be within `max_pixels` (`ImageTooLargeError`); absent or invalid geometry of an image
    is `CorruptFileError`. A header without Rows and Columns (no image: SR, RT plan) has
    only its frame count checked."""
    frames = _int(ds, "NumberOfFrames", 1)
    rows, cols = _int(ds, "Rows", None), _int(ds, "Columns", None)
    samples = _int(ds, "SamplesPerPixel", 1)
    assert frames is not None and samples is not None
    if (rows is None) != (cols is None):
        missing = "Rows" if rows is None else "Columns"
        raise CorruptFileError(f"DICOM image geometry incomplete: {missing} is missing")
    height, width = (rows, cols) if rows is not None and cols is not None else (1, 1)
    if min(height, width, frames, samples) <= 0:
        raise CorruptFileError(
            f"DICOM image geometry invalid: {cols}x{rows} px, {samples} sample(s), "
            f"{frames} frame(s)"
        )
    total = frames * height * width * samples
    if total > max_pixels:
        shape = f"{width}x{height} px x " if rows is not None else ""
        raise ImageTooLargeError(
            f"{shape}{samples} sample(s) x {frames:,} frame(s) = {total:,} values exceeds the "
            f"limit of {max_pixels:,} px"
        )
    return frames


def _pixel_bytes(ds: Dataset, max_pixels: int) -> int:
    """Bytes of pixel data the header's geometry describes (0 without Rows/Columns)."""
    frames = check_geometry(ds, max_pixels)
    rows, cols = _int(ds, "Rows", None), _int(ds, "Columns", None)
    if rows is None or cols is None:
        return 0
    samples = _int(ds, "SamplesPerPixel", 1) or 1
    bits = _int(ds, "BitsAllocated", 16) or 16
    if not 1 <= bits <= 64:
        raise CorruptFileError(f"DICOM BitsAllocated {bits} is not between 1 and 64")
    return -(-frames * rows * cols * samples * bits // 8)
