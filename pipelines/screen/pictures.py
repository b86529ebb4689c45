"""Pictures for the report: thumbnails and CAM overlays of the top flagged studies.

Done on the driver after scoring, for a bounded number of studies (`pictures` in the
config), so its cost does not grow with the archive: the pixels are re-read from the shards
or re-decoded from the raw files, and the model runs once more for Grad-CAM
(`mura_core.cam`, a few images at a time; an ensemble's map is its members' mean).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from mura_core.cam import CAM_BATCH, class_activation_maps, overlay_png
from mura_core.checkpoints import load_bundle
from mura_core.screen_report import ReportImage, thumbnail_png

from ..console import console
from .inputs import ScreenInput, load_pixels

PER_STUDY = 4
DISPLAY_SIZE = 192


def image_cams(
    inp: ScreenInput, model_folder: Path, image_ids: list[str], *, display: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Pixels (at least `display` px, raw sources) and Grad-CAM maps of some images, by
    report image id; images that no longer decode are left out."""
    model, info = load_bundle(model_folder)
    size = max(info.size, display) if inp.rows is not None else (inp.shard_size or 0)
    pixels = load_pixels(inp, image_ids, size)
    preset = info.eval_preset()
    ids = [i for i in image_ids if i in pixels]
    maps: dict[str, np.ndarray] = {}
    if ids:
        bar = console.progress("pictures", len(ids), "images")
        for start in range(0, len(ids), CAM_BATCH):  # a chunk's pixels at a time (memory)
            chunk = ids[start : start + CAM_BATCH]
            x = preset(torch.from_numpy(np.stack([pixels[i] for i in chunk])))
            maps.update(zip(chunk, class_activation_maps(model, x)[0], strict=True))
            bar.advance(len(chunk))
        bar.close()
    return pixels, maps


def study_pictures(
    inp: ScreenInput,
    model_folder: Path,
    images: pa.Table,
    study_keys: list[str],
) -> dict[str, tuple[ReportImage, ...]]:
    """For each study key: up to PER_STUDY of its images (highest probability first)."""
    if not study_keys:
        return {}
    chosen = images.filter(pc.is_in(images["study_key"], pa.array(study_keys)))
    rows: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(chosen.to_pylist(), key=lambda r: -r["prob"]):
        if len(rows.setdefault(row["study_key"], [])) < PER_STUDY:
            rows[row["study_key"]].append(row)
    wanted = [r["image_id"] for rs in rows.values() for r in rs]
    pixels, maps = image_cams(inp, model_folder, wanted, display=DISPLAY_SIZE)
    out: dict[str, tuple[ReportImage, ...]] = {}
    for key in study_keys:
        out[key] = tuple(
            ReportImage(
                image_id=r["image_id"],
                view=r["view"],
                prob=float(r["prob"]),
                thumbnail=thumbnail_png(pixels[r["image_id"]]),
                cam=overlay_png(pixels[r["image_id"]], maps[r["image_id"]]),
            )
            for r in rows.get(key, [])
            if r["image_id"] in pixels
        )
    return out
