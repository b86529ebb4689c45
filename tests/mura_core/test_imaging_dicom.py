"""DICOM decoding against real files: pydicom's test set, NEMA WG04 CR radiographs."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from mura_core import imaging
from mura_core.imaging import (
    CorruptFileError,
    ImageTooLargeError,
    NotAnImageError,
    UnsupportedTransferSyntaxError,
)

PYDICOM_TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def _all_pydicom_files() -> list[Path]:
    return sorted(p for p in PYDICOM_TEST_FILES.rglob("*") if p.is_file())


def test_every_file_in_pydicoms_wheel_is_decoded_or_refused_with_a_reason() -> None:
    files = _all_pydicom_files()
    assert len(files) > 150
    outcomes: Counter[str] = Counter()
    for path in files:
        try:
            decoded = imaging.decode(path)
        except imaging.ImagingError as exc:
            assert exc.reason and "\n" not in exc.reason, path
            outcomes[exc.error_type] += 1
            continue
        assert decoded.n_frames >= 1
        for frame in decoded.frames:
            assert frame.dtype == np.uint8 and frame.ndim == 2, path
        outcomes["decoded"] += 1
    # The wheel holds images, non-images (RT plan, SR, waveform) and damaged files: all three
    # outcomes must occur, or the test is not exercising what it claims.
    assert outcomes["decoded"] > 50
    assert outcomes["not_an_image"] > 10
    assert outcomes["corrupt"] >= 2


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("rtplan.dcm", NotAnImageError),
        ("test-SR.dcm", NotAnImageError),
        ("waveform_ecg.dcm", NotAnImageError),
        ("MR_truncated.dcm", CorruptFileError),
        ("JPEG-lossy.dcm", UnsupportedTransferSyntaxError),
    ],
)
def test_specific_refusals(name: str, error: type[imaging.ImagingError]) -> None:
    with pytest.raises(error) as info:
        imaging.decode(get_testdata_file(name))
    assert len(info.value.reason) > 10


def test_multiframe_gives_one_image_per_frame() -> None:
    decoded = imaging.decode(get_testdata_file("SC_rgb_rle_2frame.dcm"))
    assert decoded.n_frames == 2
    assert decoded.info.windowing == "colour"


def test_colour_becomes_luminance() -> None:
    # SC_rgb: bands of pure red, green, blue, ...: luminance weights are visible in the means
    decoded = imaging.decode(get_testdata_file("SC_rgb.dcm"))
    frame = decoded.frames[0]
    ds = pydicom.dcmread(get_testdata_file("SC_rgb.dcm"))
    rgb = ds.pixel_array.astype(float)
    expected = np.rint(rgb @ np.array([0.299, 0.587, 0.114]))
    assert np.abs(frame.astype(float) - expected).max() <= 1


def test_pixel_limit_refuses_before_decoding() -> None:
    with pytest.raises(ImageTooLargeError, match="exceeds the limit"):
        imaging.decode(get_testdata_file("CT_small.dcm"), max_pixels=100 * 100)


def test_truncated_copy_of_a_real_file_is_corrupt(tmp_path: Path) -> None:
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) - 5000])
    with pytest.raises(CorruptFileError):
        imaging.decode(cut)


def test_window_from_header_is_applied() -> None:
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    ds.WindowCenter, ds.WindowWidth = 40, 400  # a soft-tissue window
    values = pydicom.pixels.apply_modality_lut(ds.pixel_array, ds).astype(float)
    expected = np.clip(((values - 39.5) / 399.0 + 0.5), 0, 1)
    out = imaging.dicom._gray_to_unit(ds, ds.pixel_array)
    assert out[1] == "window"
    assert np.allclose(out[0], expected)


def _rg_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"))


def test_shared_radiographs_decode_except_jply(shared_dicom: Path) -> None:
    files = _rg_files(shared_dicom)
    assert len(files) == 8
    for path in files:
        if "JPLY" in path.name:
            with pytest.raises(UnsupportedTransferSyntaxError) as info:
                imaging.decode(path)
            assert "JPEG Extended" in info.value.reason
            assert "1.2.840.10008.1.2.4.51" in info.value.reason
        else:
            decoded = imaging.decode(path)
            assert decoded.frames[0].shape == (decoded.info.height, decoded.info.width)


def _bone_and_air(image: np.ndarray) -> tuple[float, float]:
    """RG3 (distal tibia): mean of the tibial shaft vs. the air strip beside the leg.

    Measured on the files: rows 20-30 % of the height cross the shaft at 47.5-52.5 % of the
    width (cortex and medulla) and air inside the collimated field at 28-36 %.
    """
    h, w = image.shape
    rows = slice(int(h * 0.2), int(h * 0.3))
    bone = image[rows, int(w * 0.475) : int(w * 0.525)].mean()
    air = image[rows, int(w * 0.28) : int(w * 0.36)].mean()
    return float(bone), float(air)


@pytest.mark.parametrize("name", ["RG3_RLE.dcm", "RG3_J2KI.dcm", "RG3_JLSN.dcm", "RG3_JPLL.dcm"])
def test_shared_rg3_monochrome1_comes_out_bone_bright(shared_dicom: Path, name: str) -> None:
    decoded = imaging.decode(shared_dicom / name)
    assert decoded.info.photometric == "MONOCHROME1" and decoded.info.inverted
    bone, air = _bone_and_air(decoded.frames[0])
    assert bone > 150 and air < 60, (bone, air)
    assert bone - air > 100


@pytest.mark.parametrize("name", ["RG3_UNCR.dcm", "RG3_UNCI.dcm", "RG3_J2KR.dcm", "RG3_J2KI.dcm"])
def test_pydicom_data_rg3_bone_bright(name: str) -> None:
    decoded = imaging.decode(get_testdata_file(name, download=False))
    bone, air = _bone_and_air(decoded.frames[0])
    assert bone - air > 100, (bone, air)


@pytest.mark.parametrize("name", ["RG1_UNCR.dcm", "RG1_J2KR.dcm", "RG1_UNCI.dcm"])
def test_pydicom_data_rg1_chest_spine_bright_lungs_dark(name: str) -> None:
    """RG1 is a PA chest, MONOCHROME1: the spine (centre) is bright, the lungs dark."""
    decoded = imaging.decode(get_testdata_file(name, download=False))
    assert decoded.info.photometric == "MONOCHROME1" and decoded.info.inverted
    image = decoded.frames[0].astype(float)
    h, w = image.shape
    rows = slice(int(h * 0.3), int(h * 0.5))
    spine = image[rows, int(w * 0.46) : int(w * 0.54)].mean()
    lungs = np.mean(
        [
            image[rows, int(w * 0.2) : int(w * 0.3)].mean(),
            image[rows, int(w * 0.7) : int(w * 0.8)].mean(),
        ]
    )
    assert spine - lungs > 40, (spine, lungs)


def test_monochrome1_is_the_inverse_of_the_same_pixels_as_monochrome2(tmp_path: Path) -> None:
    path = get_testdata_file("RG3_UNCR.dcm", download=False)
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "MONOCHROME2"
    flipped = tmp_path / "rg3_mono2.dcm"
    ds.save_as(flipped)
    as_m1 = imaging.decode(path).frames[0].astype(int)
    as_m2 = imaging.decode(flipped).frames[0].astype(int)
    assert np.abs((255 - as_m1) - as_m2).max() <= 1


def test_pydicom_test_files_listing_is_not_empty() -> None:
    assert any(os.scandir(PYDICOM_TEST_FILES))
