"""PNG/JPEG decoding, bad files, pixel limits, and the resize that gives one sample shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mura_core import imaging
from mura_core.imaging import (
    CorruptFileError,
    ImageTooLargeError,
    UnsupportedImageError,
    resize_pad,
)


def _gradient(h: int = 60, w: int = 40) -> np.ndarray:
    return (np.arange(h * w).reshape(h, w) % 256).astype(np.uint8)


def test_grayscale_png_round_trips_exactly(tmp_path: Path) -> None:
    pixels = _gradient()
    Image.fromarray(pixels).save(tmp_path / "g.png")
    decoded = imaging.decode(tmp_path / "g.png")
    assert decoded.info.format == "png" and decoded.info.windowing == "none"
    assert np.array_equal(decoded.frames[0], pixels)


def test_rgb_png_becomes_luminance(tmp_path: Path) -> None:
    rgb = np.zeros((10, 30, 3), dtype=np.uint8)
    rgb[:, :10, 0] = 255  # red
    rgb[:, 10:20, 1] = 255  # green
    rgb[:, 20:, 2] = 255  # blue
    Image.fromarray(rgb).save(tmp_path / "c.png")
    frame = imaging.decode(tmp_path / "c.png").frames[0]
    assert frame[0, 0] == 76 and frame[0, 15] == 150 and frame[0, 25] == 29


def test_gray_stored_as_rgb_equals_gray(tmp_path: Path) -> None:
    pixels = _gradient()
    Image.fromarray(np.repeat(pixels[..., None], 3, axis=2)).save(tmp_path / "rgb.png")
    assert np.array_equal(imaging.decode(tmp_path / "rgb.png").frames[0], pixels)


def test_16bit_png_is_windowed_not_black(tmp_path: Path) -> None:
    values = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)  # 12-bit data
    Image.fromarray(values).save(tmp_path / "deep.png")
    decoded = imaging.decode(tmp_path / "deep.png")
    assert decoded.info.windowing == "percentile" and decoded.info.bits_stored == 16
    assert decoded.frames[0].max() == 255 and decoded.frames[0].mean() > 100


def test_jpeg_decodes(tmp_path: Path) -> None:
    Image.fromarray(_gradient(80, 80)).save(tmp_path / "x.jpg", quality=95)
    decoded = imaging.decode(tmp_path / "x.jpg")
    assert decoded.info.format == "jpeg" and decoded.frames[0].shape == (80, 80)


def test_truncated_png_is_corrupt(tmp_path: Path) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200), np.uint8)).save(
        tmp_path / "full.png"
    )
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match="truncated|damaged"):
        imaging.decode(tmp_path / "cut.png")


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n garbage"])
def test_garbage_is_refused(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "bad.png").write_bytes(content)
    with pytest.raises(CorruptFileError):
        imaging.decode(tmp_path / "bad.png")


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UnsupportedImageError, match="unknown image format"):
        imaging.decode(tmp_path / "notes.txt")


def test_png_without_suffix_is_sniffed(tmp_path: Path) -> None:
    Image.fromarray(_gradient()).save(tmp_path / "noext", format="PNG")
    assert imaging.decode(tmp_path / "noext").frames[0].shape == (60, 40)


def test_missing_file_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(CorruptFileError, match="cannot read"):
        imaging.decode(tmp_path / "nope.png")


def test_pixel_limit_refuses_a_bomb_before_decoding(tmp_path: Path) -> None:
    # 6000x6000 of zeros compresses to a few kB: a small file claiming 36 Mpx
    Image.new("L", (6000, 6000)).save(tmp_path / "bomb.png")
    assert (tmp_path / "bomb.png").stat().st_size < 200_000
    with pytest.raises(ImageTooLargeError, match="exceeds the limit"):
        imaging.decode(tmp_path / "bomb.png", max_pixels=10_000_000)


def test_pil_guard_stays_on() -> None:
    assert Image.MAX_IMAGE_PIXELS is not None


def test_pil_guard_is_reported_as_too_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Image.new("L", (300, 300)).save(tmp_path / "img.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL's own guard trips first
    with pytest.raises(ImageTooLargeError, match="decompression-bomb"):
        imaging.decode(tmp_path / "img.png")


@pytest.mark.parametrize(("h", "w"), [(100, 50), (50, 100), (64, 64), (7, 300)])
def test_resize_pad_keeps_aspect_and_centres(h: int, w: int) -> None:
    image = np.full((h, w), 200, dtype=np.uint8)
    out = resize_pad(image, 64)
    assert out.shape == (64, 64) and out.dtype == np.uint8
    rows = np.flatnonzero(out.max(axis=1))
    cols = np.flatnonzero(out.max(axis=0))
    scale = 64 / max(h, w)
    assert max(rows.size, cols.size) == 64
    assert abs(rows.size - h * scale) <= 1 and abs(cols.size - w * scale) <= 1
    # centred: padding differs by at most one pixel on either side
    assert abs(rows[0] - (63 - rows[-1])) <= 1 and abs(cols[0] - (63 - cols[-1])) <= 1


def test_load_image_gives_the_model_shape(tmp_path: Path) -> None:
    Image.fromarray(_gradient(300, 120)).save(tmp_path / "a.png")
    out = imaging.load_image(tmp_path / "a.png", size=320)
    assert out.shape == (320, 320) and out.dtype == np.uint8
    with pytest.raises(CorruptFileError, match="frame 3"):
        imaging.load_image(tmp_path / "a.png", frame=3)
