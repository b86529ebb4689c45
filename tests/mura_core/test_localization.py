"""Localization against fracture boxes: box → mask in resize_pad's frame, the pointing game,
energy inside the boxes, their aggregate, and FracAtlas's real box files (when present)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from mura_core.checkpoints import save_bundle
from mura_core.imaging import load_image
from mura_core.imaging.geometry import pad_box, resize_pad
from mura_core.localization import (
    Box,
    BoxFileError,
    LocalizationScore,
    box_mask,
    energy_inside,
    image_size,
    load_case,
    localize,
    localize_images,
    parse_boxes,
    peak,
    pointing_hit,
    read_boxes,
    wilson_interval,
)
from mura_core.model_info import ModelInfo
from mura_core.models import build_model
from mura_core.recipes import recipe
from tests.shared_data import FRACATLAS

needs_fracatlas = pytest.mark.skipif(
    not (FRACATLAS / "boxes").is_dir(), reason=f"FracAtlas is not at {FRACATLAS}"
)


def _box_of(x0: int, y0: int, x1: int, y1: int, width: int, height: int) -> Box:
    """The relative box of the pixel rectangle [x0, x1) × [y0, y1) of a width×height image."""
    return Box((x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height)


@pytest.mark.parametrize(
    ("width", "height", "rect", "size"),
    [
        (300, 180, (60, 40, 120, 100), 64),  # landscape
        (150, 400, (20, 250, 90, 330), 64),  # portrait
        (501, 333, (0, 0, 77, 51), 96),  # at the corner, odd sizes
        (123, 457, (100, 400, 123, 457), 80),  # at the opposite corner
        (200, 200, (33, 71, 34, 140), 50),  # a 1-px-wide line
        (320, 240, (50, 60, 210, 180), 320),  # no scaling on the long side
    ],
)
def test_mask_covers_the_rectangle_resize_pad_draws(
    width: int, height: int, rect: tuple[int, int, int, int], size: int
) -> None:
    x0, y0, x1, y1 = rect
    image = np.zeros((height, width), np.uint8)
    image[y0:y1, x0:x1] = 255
    drawn = resize_pad(image, size)
    mask = box_mask([_box_of(x0, y0, x1, y1, width, height)], width, height, size)
    assert mask.any()
    lit = drawn >= 128  # the resized rectangle (Pillow's antialiasing blurs its edges)
    assert not (lit & ~mask).any(), "a pixel of the drawn rectangle is outside the mask"
    # and the mask is no bigger than the rectangle's (blurred) footprint, one pixel around
    assert not (mask & ~ndimage.binary_dilation(drawn > 0)).any()
    # inside the image's area of the square only
    left, top, new_w, new_h = pad_box(width, height, size)
    rows, cols = np.nonzero(mask)
    assert rows.min() >= top and rows.max() < top + new_h
    assert cols.min() >= left and cols.max() < left + new_w


def test_pad_box_is_where_resize_pad_puts_the_image() -> None:
    for width, height, size in [(300, 180, 64), (150, 400, 64), (7, 3, 5), (1, 900, 224)]:
        left, top, new_w, new_h = pad_box(width, height, size)
        out = resize_pad(np.full((height, width), 255, np.uint8), size)
        rows, cols = np.nonzero(out)
        assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (
            top,
            top + new_h,
            left,
            left + new_w,
        )


def test_no_boxes_no_mask_and_several_boxes_add_up() -> None:
    assert not box_mask([], 100, 50, 32).any()
    a, b = Box(0.2, 0.5, 0.1, 0.2), Box(0.8, 0.5, 0.1, 0.2)
    both = box_mask([a, b], 100, 50, 32)
    assert (both == (box_mask([a], 100, 50, 32) | box_mask([b], 100, 50, 32))).all()


def test_pointing_hit_miss_ties_and_tolerance() -> None:
    mask = np.zeros((10, 10), bool)
    mask[2:4, 5:8] = True
    cam = np.zeros((10, 10), np.float32)
    cam[3, 6] = 1.0
    assert pointing_hit(cam, mask)
    cam = np.zeros((10, 10), np.float32)
    cam[6, 6] = 1.0  # 3 rows below the mask
    assert not pointing_hit(cam, mask)
    assert not pointing_hit(cam, mask, tolerance=2.9)
    assert pointing_hit(cam, mask, tolerance=3)
    tied = np.zeros((10, 10), np.float32)
    tied[0, 0] = tied[3, 6] = 1.0  # the first maximum (row-major) counts
    assert peak(tied) == (0, 0) and not pointing_hit(tied, mask)
    assert not pointing_hit(np.ones((10, 10)), np.zeros((10, 10), bool), tolerance=5)
    assert not pointing_hit(np.zeros((10, 10)), np.ones((10, 10), bool))  # nothing seen
    with pytest.raises(ValueError, match="shape"):
        pointing_hit(cam, mask[:5])


def test_energy_inside() -> None:
    mask = np.zeros((4, 4), bool)
    mask[:2] = True
    cam = np.zeros((4, 4))
    cam[0, 0], cam[3, 3] = 3.0, 1.0
    assert energy_inside(cam, mask) == pytest.approx(0.75)
    assert energy_inside(np.ones((4, 4)), mask) == pytest.approx(0.5)
    assert math.isnan(energy_inside(np.zeros((4, 4)), mask))


def test_score_aggregates_with_a_wilson_interval() -> None:
    score = LocalizationScore.of([True] * 3 + [False] * 7, [0.5, 0.1, float("nan")] + [0.0] * 7)
    assert (score.n, score.hits, score.pointing) == (10, 3, 0.3)
    # Wilson 95 % for 3/10: the textbook value (0.1078, 0.6032)
    assert score.pointing_low == pytest.approx(0.10779, abs=1e-4)
    assert score.pointing_high == pytest.approx(0.60322, abs=1e-4)
    assert score.n_energy == 9 and score.energy == pytest.approx(0.6 / 9)
    empty = LocalizationScore.of([], [])
    assert empty.n == 0 and math.isnan(empty.pointing) and empty.to_dict()["pointing"] is None
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_box_files(tmp_path: Path) -> None:
    good = tmp_path / "IMG1.txt"
    good.write_text("0 0.5985 0.3482 0.1186 0.0512\n\n0 0.1 0.2 0.3 0.4\n")
    assert read_boxes(good) == (Box(0.5985, 0.3482, 0.1186, 0.0512), Box(0.1, 0.2, 0.3, 0.4))
    assert read_boxes(tmp_path / "absent.txt") == ()
    for text in (
        "0 0.5 0.5 0.1\n",  # four fields
        "0 0.5 0.5 0.1 zero\n",  # not a number
        "0 1.5 0.5 0.1 0.1\n",  # centre outside the image
        "0 0.5 0.5 0 0.1\n",  # zero width
        "0 0.5 nan 0.1 0.1\n",
        "fracture 0.5 0.5 0.1 0.1\n",
    ):
        bad = tmp_path / "bad.txt"
        bad.write_text("0 0.5 0.5 0.1 0.1\n" + text)
        with pytest.raises(BoxFileError) as info:
            read_boxes(bad)
        message = str(info.value)
        assert "\n" not in message and str(bad) in message and "line 2" in message
    with pytest.raises(BoxFileError, match="line 1"):
        parse_boxes("0 0.5 0.5 0.1 0.1 0.9")


def _cnn_info(size: int) -> ModelInfo:
    return ModelInfo.from_recipe(recipe("seed-cnn").override(size=size))


def _seeded_cnn(size: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)  # (seed 0's random CNN sees nothing: all-zero maps)
        return build_model("cnn", size=size).eval()


def test_localize_a_model_and_a_bundle(tmp_path: Path) -> None:
    size = 64
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, size, size), dtype=np.uint8)
    masks = np.zeros((5, size, size), bool)
    masks[:, 10:30, 20:40] = True
    model, info = _seeded_cnn(size), _cnn_info(size)
    results = localize_images(model, images, masks, info=info, batch_size=2)
    assert len(results) == 5
    for result, mask in zip(results, masks, strict=True):
        assert result.cam.shape == (size, size) and 0.0 <= result.prob <= 1.0
        assert result.peak == peak(result.cam)
        assert result.cam.max() == pytest.approx(1.0)
        assert result.hit == bool(mask[result.peak])
        assert result.energy == pytest.approx(energy_inside(result.cam, mask), nan_ok=True)
    folder = save_bundle(tmp_path / "bundle", model, info)
    score = localize(folder, images, masks)
    assert score == LocalizationScore.of_images(results)
    with pytest.raises(ValueError, match="no box"):
        localize(model, images, np.zeros_like(masks), info=info)
    with pytest.raises(ValueError, match="64px"):
        localize(model, images[:, :32, :32], masks[:, :32, :32], info=info)
    with pytest.raises(ValueError, match="ModelInfo"):
        localize(model, images, masks)


@needs_fracatlas
def test_real_fracatlas_boxes_and_case() -> None:
    boxes_file = FRACATLAS / "boxes" / "IMG0000019.txt"
    boxes = read_boxes(boxes_file)
    assert boxes == (Box(0.5985, 0.3482, 0.1186, 0.0512),)
    image_path = FRACATLAS / "images" / "Fractured" / "IMG0000019.jpg"
    case = load_case(image_path, boxes_file, 96)
    assert (case.image == load_image(image_path, size=96)).all()
    # mapped from the decoded frame (shrunk 2x while decoding, as load_image does), whose
    # shape is the file's up to the shrink
    width, height = image_size(image_path)
    assert (case.width, case.height) == (math.ceil(width / 2), math.ceil(height / 2))
    from_file = box_mask(boxes, width, height, 96)
    assert (case.mask ^ from_file).sum() <= 2 * (case.mask.shape[0] + case.mask.shape[1])
    assert case.mask.any() and case.mask.sum() < 0.05 * case.mask.size
    # the mask lies on the film, not on the black padding
    assert case.image[case.mask].mean() > 20
    assert all(read_boxes(p) for p in sorted((FRACATLAS / "boxes").glob("*.txt"))[:50])
