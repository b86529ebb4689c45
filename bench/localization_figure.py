"""Where does a model look on real fractures? Grad-CAM against FracAtlas's fracture boxes.

Draws a grid of real FracAtlas fractured TEST images (the project's split), each with the
model's class activation map overlaid, the radiologists' fracture box(es) outlined and the
map's peak marked; each panel's title gives the model's probability and whether the peak
fell inside a box (the pointing game, `mura_core.localization`). The FracAtlas attribution
is the figure's footer (CC BY 4.0: anything made from the files carries it). With
`--scores JSON` it also scores every fractured test image (pointing game with its 95 %
Wilson interval, energy inside the boxes), overall and per body part, with the chance
levels beside them (the boxes' mean share of the input: what a uniform map's energy would
be, and how often a peak dropped uniformly on the square would hit). The steps:

1. List FracAtlas (`mura_core.archive.folder.list_folder` over `ArchiveFiles`) and split it
   with `assign_splits(refs, SplitConfig(seed=0, val_fraction=0.1, test_fraction=0.2))`,
   the split `bench/ablation.py` trains on; keep the test images labelled fractured, sorted
   by path (every one has a box file).
2. Panels: rows × cols images evenly spaced over that sorted list (never chosen by their
   result), skipping the release's truncated JPEGs (the decoder refuses them).
3. Each image is decoded as the model sees it (`load_case`: `load_image(path, size=S)`'s
   pixels, the boxes mapped to the same S×S frame) and scored (`localize_images`: Grad-CAM
   at S, probability, peak, hit, energy).
4. Drawing at `--display` px (default: the larger of S and 256): the image decoded at that
   size, the S×S map cropped to the image's area and resized onto the image's area at the
   display size (so map, box and peak stay registered, whatever the two sizes), the exact
   box outlined, the peak marked ×.

    nice -n 10 .venv/bin/python bench/localization_figure.py --bundle BUNDLE --out fig.png
    nice -n 10 .venv/bin/python bench/localization_figure.py --bundle BUNDLE --out fig.png \\
        --scores bench/results/localization_NAME.json

FracAtlas: Abedeen I. et al., Scientific Data 10, 521 (2023), doi:10.1038/s41597-023-02432-4,
CC BY 4.0 (read from /work/shared, never copied here).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mura_core.archive import ArchiveFiles  # noqa: E402
from mura_core.archive.folder import list_folder  # noqa: E402
from mura_core.cam import overlay  # noqa: E402
from mura_core.checkpoints import load_bundle  # noqa: E402
from mura_core.imaging import ImagingError  # noqa: E402
from mura_core.imaging.geometry import pad_box  # noqa: E402
from mura_core.listing import ImageRef  # noqa: E402
from mura_core.localization import (  # noqa: E402
    Case,
    LocalizationScore,
    Localized,
    load_case,
    localize_images,
)
from mura_core.model_info import ModelInfo  # noqa: E402
from mura_core.splits import SplitConfig, assign_splits  # noqa: E402

DATA = Path("/work/shared/data/fracatlas")
SPLIT = SplitConfig(seed=0, val_fraction=0.1, test_fraction=0.2)
ATTRIBUTION = (
    "Images: FracAtlas, Abedeen I., Rahman M.A., Prottyasha F.Z., Ahmed T., Chowdhury T.M., "
    "Shatabda S., Scientific Data 10, 521 (2023), doi:10.1038/s41597-023-02432-4, CC BY 4.0. "
    "Changed: greyscale, downscaled (≤512 px), resized and padded, CAM overlaid, boxes drawn."
)


@dataclass(frozen=True)
class Fractured:
    """A fractured test image of FracAtlas and its box file."""

    ref: ImageRef
    boxes: Path


def fractured_test_images(data: Path = DATA) -> list[Fractured]:
    """FracAtlas's fractured images in the project's test split, sorted by path."""
    listing = list_folder(ArchiveFiles.at(data))
    splits = assign_splits(listing.refs, SPLIT)
    chosen = [
        Fractured(ref, data / "boxes" / f"{Path(ref.relpath).stem}.txt")
        for ref, split in zip(listing.refs, splits, strict=True)
        if split == "test" and ref.label == 1
    ]
    return sorted(chosen, key=lambda f: f.ref.relpath)


def decodable(
    images: Sequence[Fractured], size: int
) -> tuple[list[Fractured], list[Case], list[str]]:
    """(images, their cases at `size`, relpaths skipped as undecodable)."""
    kept, cases, skipped = [], [], []
    for item in images:
        try:
            cases.append(load_case(item.ref.location.path, item.boxes, size))
        except ImagingError:  # the release's truncated JPEGs
            skipped.append(item.ref.relpath)
            continue
        kept.append(item)
    return kept, cases, skipped


def spread(items: Sequence[Fractured], count: int) -> list[Fractured]:
    """`count` items evenly spaced over the list (all of them if fewer)."""
    if len(items) <= count:
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, count).round()]


def score(
    model: torch.nn.Module,
    info: ModelInfo,
    cases: Sequence[Case],
    *,
    tolerance: float,
    device: str | None,
) -> list[Localized]:
    images = np.stack([c.image for c in cases])
    masks = np.stack([c.mask for c in cases])
    return localize_images(model, images, masks, info=info, tolerance=tolerance, device=device)


def _to_display(cam: np.ndarray, case: Case, shown: Case, display: int) -> np.ndarray:
    """The S×S map moved onto the display frame: the image's area at S, resized to the
    image's area at the display size, zero on the padding."""
    size = cam.shape[0]
    left, top, new_w, new_h = pad_box(case.width, case.height, size)
    d_left, d_top, d_w, d_h = pad_box(shown.width, shown.height, display)
    area = cam[top : top + new_h, left : left + new_w].astype(np.float32)
    resized = np.asarray(Image.fromarray(area).resize((d_w, d_h), Image.Resampling.BILINEAR))
    out = np.zeros((display, display), np.float32)
    out[d_top : d_top + d_h, d_left : d_left + d_w] = np.clip(resized, 0.0, 1.0)
    return out


def _peak_on_display(
    peak: tuple[int, int], case: Case, shown: Case, display: int
) -> tuple[float, float]:
    """(x, y) in imshow coordinates of the display frame of the S-frame peak pixel."""
    size = case.image.shape[0]
    left, top, new_w, new_h = pad_box(case.width, case.height, size)
    d_left, d_top, d_w, d_h = pad_box(shown.width, shown.height, display)
    row, col = peak
    x = d_left + (col + 0.5 - left) / new_w * d_w - 0.5
    y = d_top + (row + 0.5 - top) / new_h * d_h - 0.5
    return x, y


def draw(
    path: Path,
    items: Sequence[Fractured],
    cases: Sequence[Case],
    results: Sequence[Localized],
    *,
    display: int,
    cols: int,
    title: str,
) -> None:
    """The grid PNG: overlay, exact boxes (white), peak (×), title per panel, footer."""
    rows = -(-len(items) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.6 * rows + 0.7), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, item, case, result in zip(axes.flat, items, cases, results, strict=False):
        shown = load_case(item.ref.location.path, item.boxes, display)
        cam = _to_display(result.cam, case, shown, display)
        ax.imshow(overlay(shown.image, cam), interpolation="bilinear")
        for box in shown.boxes:
            x0, y0, x1, y1 = box.pixels(shown.width, shown.height, display)
            ax.add_patch(
                Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="white", lw=1.4)
            )
        seen = bool(result.cam.max() > 0)
        if seen:
            px, py = _peak_on_display(result.peak, case, shown, display)
            ax.plot([px], [py], marker="x", color="white", markersize=9, mew=2.2)
            ax.plot([px], [py], marker="x", color="black", markersize=7, mew=1.0)
        verdict = "hit" if result.hit else ("miss" if seen else "miss (all-zero map)")
        ax.set_title(
            f"p = {result.prob:.2f}, {verdict}\n{Path(item.ref.relpath).name} "
            f"({item.ref.body_part})",
            fontsize=9,
            color="black" if result.hit else "firebrick",
        )
    fig.suptitle(title, fontsize=10)
    fig.text(0.5, 0.01, ATTRIBUTION, ha="center", va="bottom", fontsize=6, wrap=True)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97), h_pad=1.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _image_area(case: Case) -> int:
    """Pixels of the S×S input that hold the image (not the padding)."""
    _, _, new_w, new_h = pad_box(case.width, case.height, case.image.shape[0])
    return new_w * new_h


def scores_by_part(
    items: Sequence[Fractured], results: Sequence[Localized], tolerance: float
) -> dict[str, dict]:
    """LocalizationScore overall and per body part, as plain dicts."""
    groups: dict[str, list[Localized]] = defaultdict(list)
    for item, result in zip(items, results, strict=True):
        groups[item.ref.body_part].append(result)
    out = {"all": LocalizationScore.of_images(results, tolerance).to_dict()}
    for part in sorted(groups):
        out[part] = LocalizationScore.of_images(groups[part], tolerance).to_dict()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(
            "Grid PNG of real FracAtlas fractured test images with the model's Grad-CAM, "
            "the fracture boxes and the pointing-game verdict; the FracAtlas attribution is "
            "its footer. --scores also scores every fractured test image."
        )
    )
    parser.add_argument("--bundle", type=Path, required=True, help="a model bundle folder")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--data", type=Path, default=DATA, help=f"FracAtlas (default {DATA})")
    parser.add_argument("--rows", type=int, default=2, help="panel rows (default 2)")
    parser.add_argument("--cols", type=int, default=4, help="panel columns (default 4)")
    parser.add_argument(
        "--display", type=int, default=None, help="panel size in px (default: max(S, 256))"
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="pointing-game tolerance in model-input px (default 0; Zhang et al. used 15)",
    )
    parser.add_argument(
        "--scores", type=Path, default=None, help="also score all fractured test images: JSON"
    )
    parser.add_argument("--device", default=None, help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.cols < 1:
        parser.error("--rows and --cols must be >= 1")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model, info = load_bundle(args.bundle)
    display = args.display or max(info.size, 256)
    everything = fractured_test_images(args.data)
    picked, cases, _ = decodable(spread(everything, args.rows * args.cols + 4), info.size)
    picked, cases = picked[: args.rows * args.cols], cases[: args.rows * args.cols]
    results = score(model, info, cases, tolerance=args.tolerance, device=args.device)
    hits = sum(r.hit for r in results)
    name = (info.recipe.name if info.recipe else None) or info.model
    draw(
        args.out,
        picked,
        cases,
        results,
        display=display,
        cols=args.cols,
        title=(
            f"{name} ({info.model}, {info.size}px): Grad-CAM on FracAtlas fractured test "
            f"images; white box = fracture, × = CAM peak; pointing {hits}/{len(results)}"
            + (f" (tolerance {args.tolerance:g} px)" if args.tolerance else "")
        ),
    )
    print(f"figure written to {args.out} ({hits}/{len(results)} hits)")
    if args.scores is not None:
        items, all_cases, all_skipped = decodable(everything, info.size)
        all_results = score(model, info, all_cases, tolerance=args.tolerance, device=args.device)
        figures = {
            "bundle": str(args.bundle),
            "model": info.model,
            "recipe": name,
            "size": info.size,
            "split": {"seed": SPLIT.seed, "val": SPLIT.val_fraction, "test": SPLIT.test_fraction},
            "fractured_test_images": len(everything),
            "skipped_undecodable": all_skipped,
            "scores": scores_by_part(items, all_results, args.tolerance),
            # chance levels: the boxes' mean share of the S×S input (a uniform map's energy
            # inside; a peak dropped uniformly on the square hits that often) and of the
            # image's own area (padding left out)
            "box_share_of_input": float(np.mean([c.mask.mean() for c in all_cases])),
            "box_share_of_image": float(
                np.mean([c.mask.sum() / _image_area(c) for c in all_cases])
            ),
            "seconds": round(time.perf_counter() - started, 1),
        }
        args.scores.parent.mkdir(parents=True, exist_ok=True)
        args.scores.write_text(json.dumps(figures, indent=2) + "\n")
        overall = figures["scores"]["all"]
        print(
            f"pointing {overall['hits']}/{overall['n']} = {overall['pointing']:.3f} "
            f"(95% CI {overall['pointing_low']:.3f}-{overall['pointing_high']:.3f}), "
            f"energy inside {overall['energy']:.3f} (boxes cover "
            f"{figures['box_share_of_input']:.3f} of the input); written to {args.scores}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
