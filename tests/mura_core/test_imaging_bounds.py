"""Bounded decoding: DICOM header bombs (deflated, lying frame counts, huge element lengths,
millions of elements, codestreams bigger than their header) and check_geometry. (The
working size that keeps big images small while decoding: test_work_side.py.)

The bombs are made for real with pydicom and zlib; the deflate streams are built with full
flushes (a flushed block of 16 MiB of zeros repeats byte for byte), so a 3 GB bomb takes a
fraction of a second to write and the test never holds what it inflates to. Time and memory
are measured in a fresh subprocess (peak RSS and tracemalloc), never in pytest's own.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from mura_core import imaging
from mura_core.imaging import (
    CorruptFileError,
    ImageTooLargeError,
    check_geometry,
    read_header,
)
from mura_core.imaging.dicom_header import HEADER_BOUND, MAX_PARSE_READS

GB = 1024**3
# What a bomb may cost the process that reads it (the limits the issue asks for).
MAX_SECONDS, MAX_EXTRA_MB = 1.0, 100.0


# --- builders -------------------------------------------------------------------------


def _image_header(rows: int, cols: int, frames: int = 1, bits: int = 16) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.Modality = "CR"
    ds.Rows, ds.Columns = rows, cols
    if frames != 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 0
    return ds


def _preamble_and_meta(ds: Dataset, syntax: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    out = io.BytesIO()
    out.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)
    return out.getvalue()


def _explicit_le(ds: Dataset) -> bytes:
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    write_dataset(out, ds)
    return out.getvalue()


def _long_element(tag: int, vr: bytes, length: int) -> bytes:
    """An Explicit VR element header with a 4-byte length (OB, OW, UN ...)."""
    return struct.pack("<HH2sHL", tag >> 16, tag & 0xFFFF, vr, 0, length)


def write_deflate_bomb(
    path: Path, ds: Dataset, zeros: int, *, element: bytes | None = None, before: bytes = b""
) -> Path:
    """A deflated DICOM: `ds`, then `element` (default: Pixel Data of `zeros` bytes), then
    `zeros` zero bytes, all one deflate stream. Streamed to disk with full flushes."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    element = element or _long_element(0x7FE00010, b"OW", zeros)
    chunk = 16 << 20
    with path.open("wb") as out:
        out.write(_preamble_and_meta(ds, DeflatedExplicitVRLittleEndian))
        out.write(packer.compress(before + _explicit_le(ds) + element))
        out.write(packer.flush(zlib.Z_FULL_FLUSH))
        block = packer.compress(bytes(chunk)) + packer.flush(zlib.Z_FULL_FLUSH)
        repeats, rest = divmod(zeros, chunk)
        for _ in range(repeats):
            out.write(block)
        out.write(packer.compress(bytes(rest)) + packer.flush())
    return path


def write_plain(path: Path, ds: Dataset, tail: bytes = b"") -> Path:
    """Explicit VR Little Endian Part 10 file of `ds`, then raw `tail` bytes."""
    path.write_bytes(_preamble_and_meta(ds, ExplicitVRLittleEndian) + _explicit_le(ds) + tail)
    return path


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    side = 38_730  # 38730^2 x 2 bytes = 3.0 GB: an honest header, far over the pixel limit
    honest = write_deflate_bomb(folder / "honest.dcm", _image_header(side, side), side * side * 2)
    liar = write_deflate_bomb(folder / "liar.dcm", _image_header(1024, 1024), 3 * GB)
    # a private OB element of 3 GB before the pixel data: the header itself never ends
    private = _long_element(0x00091010, b"OB", 3 * GB)
    endless = write_deflate_bomb(
        folder / "endless.dcm", _image_header(64, 64), 3 * GB, element=private
    )
    frames = _image_header(100, 128, frames=2_000_000, bits=8)
    frames.PixelData = bytes(26_000)
    many_frames = write_plain(folder / "frames.dcm", frames)
    # a 20 KB file whose first element after the header claims 4 GB
    huge_length = write_plain(
        folder / "huge_length.dcm",
        _image_header(64, 64),
        _long_element(0x00091010, b"OB", 0xFFFFFFF0) + bytes(20_000),
    )
    # 2 M elements of 8 bytes (a private LO of length 0, repeated): 16 MB of tiny elements
    tiny = write_plain(
        folder / "tiny_elements.dcm",
        _image_header(64, 64),
        struct.pack("<HH2sH", 0x0009, 0x1000, b"LO", 0) * 2_000_000,
    )
    return {
        "honest": honest,
        "liar": liar,
        "endless": endless,
        "frames": many_frames,
        "huge_length": huge_length,
        "tiny_elements": tiny,
    }


# --- measuring a read in a fresh process ------------------------------------------------

_MEASURE = """
import json, resource, sys, time, tracemalloc
from mura_core import imaging
path, how, trace = sys.argv[1], sys.argv[2], sys.argv[3] == "trace"


def run():
    try:
        if how == "decode":
            imaging.decode(path)
        else:
            with open(path, "rb") as handle:
                ds = imaging.read_header(handle if how == "header_file" else handle.read())
            imaging.check_geometry(ds, imaging.DEFAULT_MAX_PIXELS)
    except imaging.ImagingError as exc:
        return exc.error_type + ": " + exc.reason
    return "ok"


base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start, cpu = time.perf_counter(), time.process_time()
outcome = run()
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
extra = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
traced = 0
if trace:  # a second run: allocations never touched (no RSS) still show here
    tracemalloc.start()
    run()
    traced = tracemalloc.get_traced_memory()[1]
print(json.dumps({"outcome": outcome, "seconds": seconds, "cpu_seconds": cpu,
                  "rss_mb": extra / 1024, "traced_mb": traced / 2**20}))
"""


def measure(path: Path, how: str, *, trace: bool = True) -> dict[str, object]:
    """Outcome, seconds and extra peak RSS of reading `path` in a fresh process (`how`:
    header_file, header_bytes or decode), and with `trace` the tracemalloc peak of a rerun."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path), how, "trace" if trace else "-"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_cheap(figures: dict[str, object], seconds: float = MAX_SECONDS) -> None:
    """CPU seconds (a loaded, shared machine stretches wall time, not CPU time) and a
    wall-time bound ten times looser that still catches a read that blocks."""
    assert figures["cpu_seconds"] < seconds, figures
    assert figures["seconds"] < 10 * seconds, figures
    assert figures["rss_mb"] < MAX_EXTRA_MB, figures
    assert figures["traced_mb"] < MAX_EXTRA_MB, figures


# --- Task: bounded headers ------------------------------------------------------------


def test_the_bombs_are_small_on_disk(bombs: dict[str, Path]) -> None:
    for name in ("honest", "liar", "endless"):
        assert 1_000_000 < bombs[name].stat().st_size < 4_000_000, name
    assert bombs["frames"].stat().st_size < 30_000


@pytest.mark.parametrize("how", ["header_file", "header_bytes"])
def test_deflate_bomb_with_an_honest_header_is_refused_by_its_geometry(
    bombs: dict[str, Path], how: str
) -> None:
    figures = measure(bombs["honest"], how)
    assert str(figures["outcome"]).startswith("too_large: 38730x38730 px"), figures
    assert_cheap(figures)


def test_deflate_bomb_lists_cheaply_and_decode_refuses_to_inflate_it(
    bombs: dict[str, Path],
) -> None:
    listed = measure(bombs["liar"], "header_file")
    assert listed["outcome"] == "ok", listed  # the header is honest about 1024 x 1024
    assert_cheap(listed)
    decoded = measure(bombs["liar"], "decode")
    assert "deflated dataset inflates beyond" in str(decoded["outcome"]), decoded
    assert_cheap(decoded)


def test_deflated_header_that_never_ends_is_refused(bombs: dict[str, Path]) -> None:
    figures = measure(bombs["endless"], "header_file")
    assert str(figures["outcome"]).startswith("too_large: deflated DICOM header does not end")
    assert f"{HEADER_BOUND:,}" in str(figures["outcome"])
    assert_cheap(figures)
    assert str(measure(bombs["endless"], "decode")["outcome"]).startswith("too_large")


def test_two_million_frames_in_26_kb_are_not_believed(bombs: dict[str, Path]) -> None:
    ds = read_header(bombs["frames"].read_bytes())
    assert int(ds.NumberOfFrames) == 2_000_000
    with pytest.raises(ImageTooLargeError, match="2,000,000 frame"):
        check_geometry(ds, imaging.DEFAULT_MAX_PIXELS)
    with pytest.raises(ImageTooLargeError):
        imaging.decode(bombs["frames"])
    assert_cheap(measure(bombs["frames"], "header_file"))


def test_an_element_claiming_4_gb_in_a_small_file_allocates_nothing(
    bombs: dict[str, Path],
) -> None:
    figures = measure(bombs["huge_length"], "header_file")
    assert_cheap(figures)
    figures = measure(bombs["huge_length"], "decode")
    assert str(figures["outcome"]).startswith(("corrupt", "not_an_image")), figures
    assert_cheap(figures)


def test_millions_of_tiny_elements_stop_at_the_read_budget(bombs: dict[str, Path]) -> None:
    figures = measure(bombs["tiny_elements"], "header_file", trace=False)  # tracemalloc: 13x slower
    assert figures["outcome"] == (
        f"too_large: DICOM dataset holds too many elements: parsing stopped after "
        f"{MAX_PARSE_READS:,} reads (the limit)"
    )
    # the budget costs ~0.3 s of pydicom parsing (2M elements took 19 s before it)
    assert_cheap(figures, seconds=MAX_SECONDS)


def test_pydicom_deflated_file_lists_and_decodes_as_before() -> None:
    path = Path(get_testdata_file("image_dfl.dcm"))
    expected = pydicom.dcmread(path, stop_before_pixels=True)
    for source in (path.read_bytes(), path.open("rb")):
        ds = read_header(source)
        assert ds.SOPInstanceUID == expected.SOPInstanceUID
        assert "PixelData" not in ds
        assert check_geometry(ds, imaging.DEFAULT_MAX_PIXELS) == 1
    # the same dataset, not deflated, must decode to exactly the same pixels
    plain = pydicom.dcmread(path)
    plain.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    plain.save_as(buffer, enforce_file_format=True)
    deflated, native = imaging.decode(path), imaging.decode_bytes(buffer.getvalue(), "x.dcm")
    assert deflated.info.transfer_syntax == DeflatedExplicitVRLittleEndian
    assert np.array_equal(deflated.frames[0], native.frames[0])


def test_header_of_a_file_that_is_not_dicom_is_a_typed_error() -> None:
    with pytest.raises(CorruptFileError, match="not a DICOM file"):
        read_header(b"\x89PNG\r\n\x1a\n" + bytes(200))
    with pytest.raises(CorruptFileError, match="not a DICOM file"):
        read_header(io.BytesIO(b"\0" * 100))


# --- check_geometry -------------------------------------------------------------------


def test_check_geometry_counts_samples_per_pixel() -> None:
    ds = _image_header(4000, 4000, bits=8)
    assert check_geometry(ds, 16_000_000) == 1
    ds.SamplesPerPixel = 3
    with pytest.raises(ImageTooLargeError, match="3 sample"):
        check_geometry(ds, 16_000_000)


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("Rows", 0), ("NumberOfFrames", "0"), ("NumberOfFrames", "-3"), ("SamplesPerPixel", 0)],
)
def test_check_geometry_refuses_invalid_values(keyword: str, value: object) -> None:
    ds = _image_header(64, 64)
    setattr(ds, keyword, value)
    with pytest.raises(CorruptFileError, match="geometry invalid"):
        check_geometry(ds, imaging.DEFAULT_MAX_PIXELS)


def test_check_geometry_refuses_unreadable_and_incomplete_geometry() -> None:
    ds = _image_header(64, 64)
    del ds.Columns
    with pytest.raises(CorruptFileError, match="Columns is missing"):
        check_geometry(ds, imaging.DEFAULT_MAX_PIXELS)
    # a Rows of one byte: read_header converts every element, so it refuses the header
    with pytest.raises(CorruptFileError, match=r"\(0028,0010\) unreadable"):
        read_header(write_plain_bytes(_image_header(64, 64), rows_value=b"\x40"))
    ds = _image_header(64, 64)
    ds.NumberOfFrames = "2\\3"
    with pytest.raises(CorruptFileError, match="NumberOfFrames is not an integer"):
        check_geometry(ds, imaging.DEFAULT_MAX_PIXELS)


def test_check_geometry_of_a_non_image_checks_only_its_frames() -> None:
    ds = Dataset()
    ds.Modality = "SR"
    assert check_geometry(ds, 10) == 1
    ds.NumberOfFrames = 11
    with pytest.raises(ImageTooLargeError):
        check_geometry(ds, 10)


def write_plain_bytes(ds: Dataset, *, rows_value: bytes) -> bytes:
    """A Part 10 file of `ds` whose Rows (US, 2 bytes) holds `rows_value` instead."""
    body = _explicit_le(ds)
    rows = struct.pack("<HH2sH", 0x0028, 0x0010, b"US", 2)
    at = body.index(rows)
    patched = rows[:-2] + struct.pack("<H", len(rows_value)) + rows_value
    return _preamble_and_meta(ds, ExplicitVRLittleEndian) + body[:at] + patched + body[at + 10 :]


# --- compressed frames bigger than their header ----------------------------------------


def _with_j2k_size(width: int, height: int) -> bytes:
    """pydicom's JPEG 2000 test file with its SIZ marker claiming width x height."""
    ds = pydicom.dcmread(get_testdata_file("MR_small_jp2klossless.dcm"))
    data = bytearray(ds.PixelData)
    siz = data.index(b"\xff\x4f\xff\x51")
    data[siz + 8 : siz + 24] = struct.pack(">4L", width, height, 0, 0)
    ds.PixelData = bytes(data)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_a_jpeg2000_frame_declaring_more_pixels_than_its_header_is_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j2k_bomb.dcm"
    path.write_bytes(_with_j2k_size(60_000, 60_000))
    with pytest.raises(CorruptFileError, match="declares 60000x60000 px"):
        imaging.decode(path)
    assert_cheap(measure(path, "decode"))


def test_a_jp2_box_of_length_zero_does_not_hang_the_decoder(tmp_path: Path) -> None:
    # pydicom's JP2 box walk (get_j2k_parameters) never advances past a box of length 0
    ds = pydicom.dcmread(get_testdata_file("MR_small_jp2klossless.dcm"))
    jp2 = b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00\x00\x00\x00ftyp" + bytes(16)
    ds.PixelData = pydicom.encaps.encapsulate([jp2])
    path = tmp_path / "jp2.dcm"
    ds.save_as(path, enforce_file_format=True)
    figures = measure(path, "decode")
    assert figures["outcome"] == "corrupt: JPEG 2000 (JP2) box of length 0 before the codestream"
    assert_cheap(figures)
