"""Localization, measured: does the model's class activation map point at the fracture?

FracAtlas ships a box around every fracture (`boxes/IMG*.txt`, YOLO format: one line per
fracture, `class x_center y_center width height`, each relative to the image's width and
height). This module turns those boxes into masks in the model's input frame and scores
Grad-CAM maps (`mura_core.cam`) against them. The method, top to bottom:

1. Read the boxes of an image (`read_boxes`): five numbers a line, the four coordinates
   finite, centre in [0, 1], sizes in (0, 1]; anything else is one `BoxFileError` line that
   names the file and the line. An absent file means no boxes (FracAtlas writes a file only
   for images with a box).
2. Map them into the model's S×S input exactly as `mura_core.imaging.geometry.resize_pad`
   places the image (`box_mask`): `pad_box(width, height, S)` — the one place of that rule —
   gives the scaled image's size (new_w, new_h) and its offset (left, top) in the padded
   square; a box spans x in [(xc − w/2)·new_w, (xc + w/2)·new_w) (and likewise in y) in the
   scaled image, whose pixel j covers [j, j + 1) as in Pillow's resampling; every pixel the
   box touches is in the mask (rounded outwards, clipped to the image). `width`/`height` are
   those of the image that `resize_pad` receives: `load_case` takes them from the decoded
   frame itself, so the mask and `load_image(path, size=S)`'s pixels share one frame.
3. Take each image's Grad-CAM map at S×S and the model's probability
   (`mura_core.cam.class_activation_maps`; an ensemble's map is its members' mean; the
   probability calibrated by the bundle's temperature, as screening reports it).
4. Score each image:
   - the pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop",
     ECCV 2016): a hit when the map's maximum — the first in row-major order if several
     pixels tie — lies in the mask (an all-zero map is a miss). The paper allows a
     tolerance of 15 px (at its input size); here the tolerance is 0 px unless asked
     (`tolerance`: a hit when the peak's Euclidean distance to the nearest mask pixel is at
     most that many pixels);
   - the energy inside: the share of the map's sum that falls in the mask (nan for an
     all-zero map: nothing seen, no share to give).
5. Aggregate over images (`LocalizationScore`): n, hits, pointing = hits / n with its 95 %
   Wilson interval (scipy's `binomtest(...).proportion_ci(method="wilson")`), and the mean
   energy over the images whose map is not all zero.

Only fractured images with at least one box are scored: the pointing game asks where the
model looks when there is something to find. Boxes are rectangles around the fracture line,
so "inside" is generous along the line's direction and strict across it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mura_core.errors import MuraError
from mura_core.imaging.errors import one_line
from mura_core.imaging.geometry import pad_box

if TYPE_CHECKING:
    from torch import nn

    from mura_core.model_info import ModelInfo

CONFIDENCE = 0.95


class BoxFileError(MuraError, ValueError):
    """A boxes file that is not YOLO boxes; the one line names the file and the line."""


@dataclass(frozen=True, slots=True)
class Box:
    """One fracture box as in a YOLO file: centre and size relative to the image's width
    (x) and height (y); `label` is the file's class number (FracAtlas: 0, fracture)."""

    x_center: float
    y_center: float
    width: float
    height: float
    label: int = 0

    def __post_init__(self) -> None:
        values = (self.x_center, self.y_center, self.width, self.height)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"box coordinates must be finite, got {values}")
        if not (0.0 <= self.x_center <= 1.0 and 0.0 <= self.y_center <= 1.0):
            raise ValueError(f"box centre must be in [0, 1], got {values[:2]}")
        if not (0.0 < self.width <= 1.0 and 0.0 < self.height <= 1.0):
            raise ValueError(f"box width and height must be in (0, 1], got {values[2:]}")

    def pixels(self, width: int, height: int, size: int) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of this box in the size×size frame that `resize_pad` makes of a
        width×height image, in pixel units (pixel j covers [j, j + 1)), not rounded."""
        left, top, new_w, new_h = pad_box(width, height, size)
        return (
            left + (self.x_center - self.width / 2) * new_w,
            top + (self.y_center - self.height / 2) * new_h,
            left + (self.x_center + self.width / 2) * new_w,
            top + (self.y_center + self.height / 2) * new_h,
        )


def parse_boxes(text: str, source: str = "boxes") -> tuple[Box, ...]:
    """The boxes of a YOLO text (blank lines skipped); `source` names it in errors."""
    boxes = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{source} line {number}"
        if len(fields) != 5:
            raise BoxFileError(
                one_line(f"{where}: expected 'class x_center y_center width height', got {line!r}")
            )
        try:
            label = int(fields[0])
            coords = [float(v) for v in fields[1:]]
            boxes.append(Box(*coords, label=label))
        except ValueError as exc:
            raise BoxFileError(
                one_line(f"{where}: {line.strip()!r} is not a box ({exc})")
            ) from None
    return tuple(boxes)


def read_boxes(path: str | Path) -> tuple[Box, ...]:
    """The boxes of a FracAtlas `boxes/IMG*.txt` (YOLO) file; an absent file: no boxes.
    A line that is not `class xc yc w h` with coordinates in range: one BoxFileError line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ()
    except (OSError, UnicodeDecodeError) as exc:
        raise BoxFileError(one_line(f"{path}: cannot be read as text ({exc})")) from None
    return parse_boxes(text, str(path))


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file from its header (PIL, pixels not decoded)."""
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def box_mask(boxes: Sequence[Box], width: int, height: int, size: int) -> np.ndarray:
    """Boolean (size, size) mask of every pixel the boxes touch, in the frame `resize_pad`
    makes of a width×height image (see the module doc, step 2); no boxes: all False."""
    left, top, new_w, new_h = pad_box(width, height, size)
    mask = np.zeros((size, size), dtype=bool)
    for box in boxes:
        x0, y0, x1, y1 = box.pixels(width, height, size)
        c0, c1 = max(left, math.floor(x0)), min(left + new_w, math.ceil(x1))
        r0, r1 = max(top, math.floor(y0)), min(top + new_h, math.ceil(y1))
        mask[r0:r1, c0:c1] = True
    return mask


@dataclass(frozen=True, eq=False)
class Case:
    """One image ready to score: the model-ready pixels (uint8 S×S, as
    `load_image(path, size=S)` gives them), its boxes, their mask, and the size of the
    decoded frame they were mapped from."""

    image: np.ndarray
    boxes: tuple[Box, ...]
    mask: np.ndarray
    width: int
    height: int


def load_case(image_path: str | Path, boxes_path: str | Path, size: int) -> Case:
    """Decode an image as `load_image(path, size=size)` does and map its boxes with the
    decoded frame's own width and height (so a decoder's shrink while decoding cannot move
    them). An undecodable file raises the imaging layer's ImagingError."""
    from mura_core.imaging import decode, select_frame

    decoded = decode(image_path, work_side=2 * size)
    height, width = decoded.frames[0].shape[:2]
    boxes = read_boxes(boxes_path)
    return Case(
        image=select_frame(decoded, 0, size),
        boxes=boxes,
        mask=box_mask(boxes, width, height, size),
        width=width,
        height=height,
    )


def peak(cam: np.ndarray) -> tuple[int, int]:
    """(row, column) of the map's maximum; ties: the first in row-major order."""
    row, col = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return int(row), int(col)


def pointing_hit(cam: np.ndarray, mask: np.ndarray, tolerance: float = 0.0) -> bool:
    """The pointing game: is the map's peak (`peak`) inside the mask, or within `tolerance`
    pixels of it (Euclidean; default 0, the peak itself must be in the mask; Zhang et al.
    used 15 px)? An empty mask is never hit, and an all-zero map (nothing seen) never hits."""
    if cam.shape != mask.shape:
        raise ValueError(f"map {cam.shape} and mask {mask.shape} differ in shape")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if not np.any(cam > 0):  # an all-zero map points nowhere: a miss
        return False
    row, col = peak(cam)
    if mask[row, col]:
        return True
    if tolerance == 0 or not mask.any():
        return False
    rows, cols = np.nonzero(mask)
    return bool(((rows - row) ** 2 + (cols - col) ** 2).min() <= tolerance**2)


def energy_inside(cam: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's sum inside the mask; nan for an all-zero map."""
    if cam.shape != mask.shape:
        raise ValueError(f"map {cam.shape} and mask {mask.shape} differ in shape")
    values = np.asarray(cam, dtype=np.float64)
    total = float(values.sum())
    if total <= 0.0:
        return float("nan")
    return float(values[mask].sum() / total)


def wilson_interval(hits: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of hits / n (scipy); n = 0: (nan, nan)."""
    if n == 0:
        return float("nan"), float("nan")
    from scipy.stats import binomtest

    ci = binomtest(hits, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


@dataclass(frozen=True, eq=False)
class Localized:
    """One scored image: the model's probability, its map (S×S in [0, 1]), the map's peak
    (row, column), the pointing-game hit and the energy inside the boxes."""

    prob: float
    cam: np.ndarray = field(repr=False)
    peak: tuple[int, int]
    hit: bool
    energy: float


@dataclass(frozen=True)
class LocalizationScore:
    """The pointing game and energy inside the boxes over n images (module doc, step 5)."""

    n: int
    hits: int
    pointing: float
    pointing_low: float
    pointing_high: float
    energy: float
    n_energy: int
    tolerance: float = 0.0

    @classmethod
    def of(
        cls, hits: Sequence[bool], energies: Sequence[float], tolerance: float = 0.0
    ) -> LocalizationScore:
        """Aggregate per-image hits and energies (nan energies are left out of the mean)."""
        if len(hits) != len(energies):
            raise ValueError(f"{len(hits)} hits but {len(energies)} energies")
        n, k = len(hits), int(sum(bool(h) for h in hits))
        finite = [float(e) for e in energies if not math.isnan(e)]
        low, high = wilson_interval(k, n)
        return cls(
            n=n,
            hits=k,
            pointing=k / n if n else float("nan"),
            pointing_low=low,
            pointing_high=high,
            energy=float(np.mean(finite)) if finite else float("nan"),
            n_energy=len(finite),
            tolerance=float(tolerance),
        )

    @classmethod
    def of_images(cls, results: Sequence[Localized], tolerance: float = 0.0) -> LocalizationScore:
        return cls.of([r.hit for r in results], [r.energy for r in results], tolerance)

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers (nan as None), ready for JSON."""
        return {
            key: (None if isinstance(value, float) and math.isnan(value) else value)
            for key, value in self.__dict__.items()
        }


def _model_and_info(
    model: nn.Module | str | Path, info: ModelInfo | None
) -> tuple[nn.Module, ModelInfo]:
    if isinstance(model, (str, Path)):
        from mura_core.checkpoints import load_bundle

        loaded, bundle_info = load_bundle(Path(model))
        return loaded, info or bundle_info
    if info is None:
        raise ValueError("a model given as a module needs its ModelInfo (info=...)")
    return model, info


def localize_images(
    model: nn.Module | str | Path,
    images: np.ndarray,
    masks: np.ndarray,
    *,
    info: ModelInfo | None = None,
    tolerance: float = 0.0,
    batch_size: int | None = None,
    device: str | None = None,
) -> list[Localized]:
    """Grad-CAM of each image (uint8 (N, S, S), S the model's size) scored against its mask
    (bool (N, S, S), at least one box each). `model`: a bundle folder, or a module with its
    `info`. Probabilities are calibrated by the bundle's temperature."""
    import torch

    from mura_core.cam import CAM_BATCH, class_activation_maps

    net, info = _model_and_info(model, info)
    images, masks = np.asarray(images), np.asarray(masks, dtype=bool)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 (N, S, S) images, got {images.dtype} {images.shape}")
    if masks.shape != images.shape:
        raise ValueError(f"masks {masks.shape} do not match images {images.shape}")
    if len(images) and images.shape[1:] != (info.size, info.size):
        raise ValueError(f"images are {images.shape[1:]}, the model takes {info.size}px")
    empty = [i for i in range(len(masks)) if not masks[i].any()]
    if empty:
        raise ValueError(f"{len(empty)} image(s) have no box (first: index {empty[0]})")
    step = batch_size or CAM_BATCH
    target = torch.device(device) if device else torch.device("cpu")
    net = net.to(target)
    preset = info.eval_preset()
    out: list[Localized] = []
    for start in range(0, len(images), step):
        x = preset(torch.from_numpy(images[start : start + step].copy()).to(target))
        maps, probs = class_activation_maps(net, x, batch_size=step)
        calibrated = info.operating_point().calibrated(np.asarray(probs, dtype=np.float64))
        for cam, prob, mask in zip(maps, calibrated, masks[start : start + step], strict=True):
            out.append(
                Localized(
                    prob=float(prob),
                    cam=cam,
                    peak=peak(cam),
                    hit=pointing_hit(cam, mask, tolerance),
                    energy=energy_inside(cam, mask),
                )
            )
    return out


def localize(
    model: nn.Module | str | Path,
    images: np.ndarray,
    masks: np.ndarray,
    *,
    info: ModelInfo | None = None,
    tolerance: float = 0.0,
    batch_size: int | None = None,
    device: str | None = None,
) -> LocalizationScore:
    """The pointing game and energy inside the boxes of a model over images and masks
    (see `localize_images` for the arguments)."""
    results = localize_images(
        model,
        images,
        masks,
        info=info,
        tolerance=tolerance,
        batch_size=batch_size,
        device=device,
    )
    return LocalizationScore.of_images(results, tolerance)
