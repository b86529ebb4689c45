"""Fuzz the decoders: every mutated input ends as a `Decoded` or an `ImagingError`, within a
time and a memory bound.

Inputs are real seed files (tests/fuzz/seeds.py) mutated by hypothesis: length fields and
size values set to edge values (0, 1, 0xFFFF, 0xFFFFFFFF, off by a little ...), DICOM
element values replaced whole, then byte flips, overwrites, truncations, insertions,
deletions and repeated chunks. Three targets: `decode_bytes` on PNG/JPEG, `decode_bytes` on
DICOM (with and without `work_side`), and `read_header` + `check_geometry` + the attributes
listing reads, the way listing calls them. Any other exception is a crasher: hypothesis
shrinks it to a minimal input, which goes into test_fuzz_regressions.py once fixed.

Budget: `MURA_FUZZ_EXAMPLES` examples per target; unset, `make test` runs a fixed
(derandomized) 5,000 inputs in all, ~20 s on two idle cores, well under a minute loaded;
`make fuzz` runs 20,000 per target, randomized, a new sample every run.
Bounds per input: `MAX_SECONDS` of CPU time (others' load on a shared machine stretches
wall time, so ten times as much wall time is allowed) and `MAX_EXTRA_MB` of peak RSS above
the RSS before it (Linux VmHWM, reset through /proc/self/clear_refs; tracemalloc elsewhere),
with a pixel limit of `MAX_PIXELS` so that a legitimate decode stays far below the memory
bound.
"""

from __future__ import annotations

import io
import os
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mura_core import imaging
from tests.fuzz.seeds import Element, Field, Seed, dicom_seeds, fix_png_crcs, image_seeds

# pydicom warns on every oddity it tolerates: thousands of lines of expected noise here
pytestmark = pytest.mark.filterwarnings("ignore")

LONG_RUN = "MURA_FUZZ_EXAMPLES" in os.environ
EXAMPLES = int(os.environ.get("MURA_FUZZ_EXAMPLES") or 0)
MAX_SECONDS = 2.0  # CPU time of this process per input (wall: ten times that)
MAX_EXTRA_MB = 256
MAX_PIXELS = 1024 * 1024  # a legitimate decode of this many pixels costs ~50 MB

FUZZ = settings(
    deadline=None,  # the bound is checked around the decoder alone, below
    database=None,  # nothing written into the checkout; a failure prints its blob
    derandomize=not LONG_RUN,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

EDGE_VALUES = (0, 1, 2, 3, 4, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF)
EDGE_VALUES += (0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFF0, 0xFFFFFFFE, 0xFFFFFFFF)
# Values a DICOM element may be given whole (strings padded to even length by the writer).
ELEMENT_VALUES = (
    b"",
    b"0 ",
    b"1 ",
    b"-1",
    b"3 ",
    b"16",
    b"2000000 ",
    b"1e308 ",
    b"nan ",
    b"\x00\x00",
    b"\xff\xff",
    b"\x00\x80",
    b"\xff\xff\xff\xff",
    b"RGB ",
    b"MONOCHROME1 ",
    b"PALETTE COLOR ",
    b"YBR_FULL_422",
    b"1.2.840.10008.1.2.1.99",
    b"1.2.840.10008.1.2.5 ",
    b"1.2.840.10008.1.2.4.90",
    b"1.2.840.10008.1.2.4.80",
    b"1.2.840.10008.1.2.4.50",
    b"1.2.840.10008.1.2.2 ",
    b"1.2.840.10008.1.2\x00",
)


def _examples(default: int) -> int:
    return EXAMPLES or default


# --- mutations ----------------------------------------------------------------------------


def _set_field(data: bytearray, f: Field, value: int) -> None:
    if f.offset + f.width <= len(data):
        value &= (1 << (8 * f.width)) - 1
        data[f.offset : f.offset + f.width] = value.to_bytes(
            f.width, "big" if f.order == ">" else "little"
        )


def _set_element(data: bytearray, e: Element, value: bytes) -> None:
    """Replace an element's value and its length together (the file grows or shrinks)."""
    if e.value + e.length > len(data):
        return
    length = e.length_field
    order = "big" if length.order == ">" else "little"
    data[e.value : e.value + e.length] = value
    data[length.offset : length.offset + length.width] = len(value).to_bytes(length.width, order)


@st.composite
def field_values(draw: st.DrawFn, f: Field) -> int:
    """An edge value or any value of the field's width, give or take a little."""
    base = draw(st.sampled_from(EDGE_VALUES) | st.integers(0, (1 << (8 * f.width)) - 1))
    return base + draw(st.sampled_from((0, 0, 0, 1, -1, 2, -2)))


@st.composite
def structural(draw: st.DrawFn, seed: Seed) -> list[tuple[int, Callable[[bytearray], None]]]:
    """Edits of fields and elements, as (offset, edit): applied from the end of the file to
    its start, so that an element that changes size does not move the others' offsets."""
    edits: list[tuple[int, Callable[[bytearray], None]]] = []
    for _ in range(draw(st.integers(0, 2))):
        if seed.elements and draw(st.booleans()):
            e = draw(st.sampled_from(seed.elements))
            value = draw(st.sampled_from(ELEMENT_VALUES) | st.binary(max_size=24))
            value += b"\x00" * (len(value) % 2)
            edits.append((e.value, lambda d, e=e, v=value: _set_element(d, e, v)))
        elif seed.fields:
            f = draw(st.sampled_from(seed.fields))
            value = draw(field_values(f))
            edits.append((f.offset, lambda d, f=f, v=value: _set_field(d, f, v)))
    return sorted(edits, key=lambda edit: -edit[0])


BYTE_EDITS = ("flip", "flip", "set", "insert", "delete", "repeat", "truncate")


@st.composite
def position(draw: st.DrawFn, seed: Seed, length: int) -> int:
    """Where a byte edit lands: near a structural field half of the time, else anywhere
    (a uniform draw: hypothesis's integers favour small values, i.e. the preamble)."""
    if seed.fields and draw(st.booleans()):
        near = draw(st.sampled_from(seed.fields)).offset + draw(st.integers(-16, 16))
        return max(seed.keep, min(length, near))
    return draw(st.randoms(use_true_random=False)).randint(min(seed.keep, length), length)


@st.composite
def byte_edits(draw: st.DrawFn, seed: Seed, data: bytearray) -> bytearray:
    """Up to three flips, overwrites, insertions, deletions, repeats or truncations."""
    for _ in range(draw(st.integers(0, 3))):
        kind, at = draw(st.sampled_from(BYTE_EDITS)), draw(position(seed, len(data)))
        size = draw(st.integers(1, 64))
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        elif kind == "delete":
            del data[at : at + size]
        elif kind == "repeat":
            data[at:at] = data[at : at + size] * draw(st.integers(1, 4))
        elif kind == "truncate":
            del data[at:]
    return data


@st.composite
def mutated(draw: st.DrawFn, seeds: tuple[Seed, ...]) -> tuple[str, str, bytes]:
    """(seed label, file name, mutated bytes)."""
    seed = draw(st.sampled_from(seeds))
    data = bytearray(seed.data)
    for _, edit in draw(structural(seed)):
        edit(data)
    data = draw(byte_edits(seed, data))
    if seed.finish is not None:
        data = bytearray(seed.finish(bytes(data)))
    if seed.name.endswith(".png") and draw(st.integers(0, 3)):  # 3 in 4: past the CRCs
        data = bytearray(fix_png_crcs(bytes(data)))
    return seed.label, seed.name, bytes(data)


# --- the bounds -----------------------------------------------------------------------------


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _can_reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


HWM = _can_reset_peak()


@pytest.fixture(scope="module", autouse=True)
def _memory_meter() -> Iterator[None]:
    """Without VmHWM (not Linux), tracemalloc measures Python and numpy allocations."""
    if HWM:
        yield
        return
    tracemalloc.start()
    yield
    tracemalloc.stop()


def bounded(call: Callable[[], object], what: str) -> object:
    """`call()`'s result or its ImagingError, checked against the time and memory bounds;
    any other exception propagates (a crasher)."""
    if HWM:
        before = _status("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")
    else:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
    start, cpu = time.perf_counter(), time.process_time()
    try:
        result: object = call()
    except imaging.ImagingError as exc:
        assert exc.reason and "\n" not in exc.reason and exc.error_type, what
        result = exc
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = _status("VmHWM") if HWM else tracemalloc.get_traced_memory()[1]
    extra_mb = (peak - before) / 2**20
    assert cpu < MAX_SECONDS, f"{what}: {cpu:.2f} s of CPU (bound {MAX_SECONDS} s)"
    assert seconds < 10 * MAX_SECONDS, f"{what}: {seconds:.2f} s of wall time"
    assert extra_mb < MAX_EXTRA_MB, f"{what}: {extra_mb:.0f} MB (bound {MAX_EXTRA_MB} MB)"
    return result


def check_decoded(result: object, what: str) -> None:
    if isinstance(result, imaging.ImagingError):
        return
    assert isinstance(result, imaging.Decoded), what
    assert result.n_frames >= 1, what
    for frame in result.frames:
        assert frame.dtype == np.uint8 and frame.ndim == 2 and frame.size > 0, what
    assert result.info.height > 0 and result.info.width > 0, what


def _decode(data: bytes, name: str, work_side: int | None) -> object:
    return imaging.decode_bytes(data, name, max_pixels=MAX_PIXELS, work_side=work_side)


WORK_SIDES = st.sampled_from((None, None, 16, 64))


# --- the targets ----------------------------------------------------------------------------


@settings(FUZZ, max_examples=_examples(1500))
@given(mutated(image_seeds()), WORK_SIDES, st.booleans())
def test_fuzz_png_and_jpeg(
    case: tuple[str, str, bytes], work_side: int | None, named: bool
) -> None:
    label, name, data = case
    name = name if named else "no_suffix"  # sniffed by magic bytes
    what = f"decode_bytes({label}, work_side={work_side})"
    check_decoded(bounded(lambda: _decode(data, name, work_side), what), what)


@settings(FUZZ, max_examples=_examples(2000))
@given(mutated(dicom_seeds()), WORK_SIDES, st.booleans())
def test_fuzz_dicom_decode(
    case: tuple[str, str, bytes], work_side: int | None, named: bool
) -> None:
    label, name, data = case
    name = name if named else "no_suffix"
    what = f"decode_bytes({label}, work_side={work_side})"
    check_decoded(bounded(lambda: _decode(data, name, work_side), what), what)


# What listing reads from every header (mura_core.archive.dicom_tree).
LISTED = (
    "StudyInstanceUID",
    "SOPInstanceUID",
    "PatientID",
    "AccessionNumber",
    "BodyPartExamined",
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
    "ViewPosition",
)


def _list_like(data: bytes, as_file: bool) -> object:
    force = not imaging.dicom.looks_like_dicom(data[:132])
    ds = imaging.read_header(io.BytesIO(data) if as_file else data, force=force)
    if any(k in ds for k in ("Rows", "Columns", "NumberOfFrames")):
        imaging.check_geometry(ds, MAX_PIXELS)
    return [str(ds.get(keyword, "") or "") for keyword in LISTED]


@settings(FUZZ, max_examples=_examples(1500))
@given(mutated(dicom_seeds()), st.booleans())
def test_fuzz_dicom_header_as_listing_reads_it(case: tuple[str, str, bytes], as_file: bool) -> None:
    label, _, data = case
    bounded(lambda: _list_like(data, as_file), f"read_header({label})")


def test_the_seeds_decode_or_are_refused_as_expected() -> None:
    """The fuzzer starts from files that work (or fail for a known reason)."""
    outcomes = {}
    for seed in (*image_seeds(), *dicom_seeds()):
        data = seed.finish(seed.data) if seed.finish else seed.data
        result = bounded(lambda d=data, n=seed.name: _decode(d, n, None), seed.label)
        outcomes[seed.label] = getattr(result, "error_type", "decoded")
    assert outcomes.pop("jpeg_extended_12bit") == "unsupported_transfer_syntax"
    assert set(outcomes.values()) == {"decoded"}, outcomes
