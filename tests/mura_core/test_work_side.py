"""The working size (`imaging.work_side`): big images shrunk while decoding (JPEG DCT
scaling, PIL's reduce, a DICOM block mean before the LUTs), so they are never converted to
floats at full resolution; the result close to a full-resolution decode, orientation kept,
only the PNG and JPEG parsers ever run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from mura_core import imaging


def _final(decoded: imaging.Decoded, size: int) -> np.ndarray:
    return imaging.select_frame(decoded, 0, size).astype(np.float64)


@pytest.mark.parametrize("name", ["RG2_J2KI.dcm", "RG3_RLE.dcm"])
def test_work_side_dicom_is_close_to_full_resolution(shared_dicom: Path, name: str) -> None:
    data = (shared_dicom / name).read_bytes()
    size = 160
    full = imaging.decode_bytes(data, name)
    small = imaging.decode_bytes(data, name, work_side=2 * size)
    assert small.frames[0].shape[0] < full.frames[0].shape[0] / 4
    assert max(small.frames[0].shape) >= 2 * size
    assert (small.info.height, small.info.width) == (full.info.height, full.info.width)
    assert np.abs(_final(small, size) - _final(full, size)).mean() < 2.0


def test_work_side_png_8_and_16_bit_from_a_real_radiograph(
    shared_dicom: Path, tmp_path: Path
) -> None:
    ds = pydicom.dcmread(shared_dicom / "RG2_J2KI.dcm")
    values = ds.pixel_array.astype(np.uint16) << 6  # 10-bit data in a 16-bit container
    for bits, pixels in ((16, values), (8, (values >> 8).astype(np.uint8))):
        path = tmp_path / f"rg2_{bits}.png"
        Image.fromarray(pixels).save(path)
        full, small = imaging.decode(path), imaging.decode(path, work_side=320)
        assert small.info == full.info and small.frames[0].shape[0] < 1000
        assert np.abs(_final(small, 160) - _final(full, 160)).mean() < 2.0, bits


def test_work_side_jpeg_uses_dct_scaling_on_a_real_radiograph(shared_dicom: Path) -> None:
    folder = shared_dicom.parent / "fracatlas" / "images"
    sources = sorted(folder.glob("Non_fractured/*.jpg"))[:5]
    if not sources:
        pytest.skip(f"FracAtlas not present at {folder}")
    for path in sources:
        full, small = imaging.decode(path), imaging.decode(path, work_side=128)
        assert small.info == full.info
        assert max(small.frames[0].shape) < max(full.frames[0].shape)
        assert np.abs(_final(small, 64) - _final(full, 64)).mean() < 2.0, path.name


def test_work_side_changes_nothing_for_a_small_image(shared_dicom: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 255, (300, 200), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "s.png")
    Image.fromarray(pixels).save(tmp_path / "s.jpg", quality=90)
    for path in (tmp_path / "s.png", tmp_path / "s.jpg", shared_dicom / "RG3_RLE.dcm"):
        full, small = imaging.decode(path), imaging.decode(path, work_side=max(300, 1760))
        assert small.info == full.info
        assert np.array_equal(small.frames[0], full.frames[0]), path.name


def test_work_side_keeps_exif_orientation_and_the_upright_size(tmp_path: Path) -> None:
    pixels = np.zeros((400, 1200), dtype=np.uint8)
    pixels[:, :100] = 255  # a bright band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to show
    Image.fromarray(pixels).save(tmp_path / "r.jpg", exif=exif, quality=95)
    full = imaging.decode(tmp_path / "r.jpg")
    small = imaging.decode(tmp_path / "r.jpg", work_side=150)
    assert (
        (full.info.height, full.info.width) == (1200, 400) == (small.info.height, small.info.width)
    )
    assert small.frames[0].shape[0] > small.frames[0].shape[1]
    assert small.frames[0][:10].mean() > 200  # the band is on top once upright
    assert np.abs(_final(small, 64) - _final(full, 64)).mean() < 2.0


def test_work_side_must_be_positive() -> None:
    with pytest.raises(ValueError, match="work_side"):
        imaging.decode_bytes(b"x", "x.png", work_side=0)


@pytest.mark.parametrize(("fmt", "name"), [("TIFF", "TIFF"), ("GIF", "GIF"), ("BMP", "BMP")])
def test_only_png_and_jpeg_parsers_ever_run(tmp_path: Path, fmt: str, name: str) -> None:
    # PIL opens some forty formats; a TIFF named .png must not reach libtiff
    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(path, format=fmt)
    with pytest.raises(imaging.UnsupportedImageError, match=f"a {name} image: only PNG and JPEG"):
        imaging.decode(path)
