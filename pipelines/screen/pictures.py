"""Pictures of the screened images: thumbnails, Grad-CAM overlays, Secondary Capture pixels.

Made after scoring, in ONE Ray Data pass (`make_evidence`), for the images that need them:
the report's first `pictures` flagged studies (up to PER_STUDY images each, highest
probability first: `report_rows`) and, writing back, every scored image of every flagged
study. The recipe, top to bottom:

1. `choose`: which images, and for what (`pipelines.screen.evidence.EvidenceRequest`);
2. their pixels (`_pixels`), never decoded or fetched on the driver: a folder's files
   decoded in tasks at the report's size (max(model size, DISPLAY_SIZE)); stored pixels
   read, only those of the chosen images, and put in the object store: a shards folder's
   rows (`inputs.stored_pixels`: the row groups that hold them), a PACS's frames that the
   scoring pass kept at max(model size, SC_DISPLAY) (`parts.ScoreParts.kept`), so no
   instance is fetched again;
3. `EvidenceMaker` actors (the model loaded once per actor, on a GPU where scoring had
   them; `mura_core.cam` makes the maps; an ensemble's map is its members' mean);
4. one `Evidence`: per image its pictures, or the reason it has none (`PictureFailure`):
   the report and the summary list it, and the write-back does not build its study.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray.data

from mura_core.screen_report import ReportImage
from mura_core.screen_summary import PictureFailure
from pipelines.runtime.cluster import cluster_cpus, data_context
from pipelines.runtime.console import console
from pipelines.screen.evidence import EVIDENCE_BATCH, EvidenceMaker, EvidenceRequest, unpack
from pipelines.screen.inputs import ScreenInput, picture_dataset, stored_pixels
from pipelines.screen.models import ScreeningModel
from pipelines.screen.parts import ScoreParts
from pipelines.shards.predict import bundle_bytes, predict

PER_STUDY = 4
DISPLAY_SIZE = 192  # the report's pictures: at least this many pixels (raw sources)
SC_DISPLAY = 320  # Secondary Capture: each half at least this many pixels


@dataclass(frozen=True)
class ImagePictures:
    """One image's pictures: the report's PNGs, and the Secondary Capture's pixels and map."""

    thumbnail: bytes | None = None
    overlay: bytes | None = None
    pixels: np.ndarray | None = None  # uint8 (S, S)
    cam: np.ndarray | None = None  # float32 (S, S) in [0, 1]


@dataclass(frozen=True)
class Evidence:
    """What the pass made, by report image id, and the images it could not make."""

    pictures: dict[str, ImagePictures]
    failures: tuple[PictureFailure, ...] = ()

    def failure(self, image_id: str) -> PictureFailure | None:
        return next((f for f in self.failures if f.image_id == image_id), None)


def kept_size(inp: ScreenInput, model_size: int) -> int | None:
    """The size at which scoring keeps each frame for the pictures: PACS sources only (a
    folder is read again, shards hold their pixels)."""
    return max(model_size, SC_DISPLAY) if inp.remote else None


def report_rows(images: pa.Table, study_keys: list[str]) -> dict[str, list[dict[str, Any]]]:
    """For each study key: up to PER_STUDY of its image rows, highest probability first."""
    chosen = images.filter(pc.is_in(images["study_key"], pa.array(study_keys, pa.string())))
    rows: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(chosen.to_pylist(), key=lambda r: -r["prob"]):
        if len(rows.setdefault(row["study_key"], [])) < PER_STUDY:
            rows[row["study_key"]].append(row)
    return rows


def choose(images: pa.Table, shown: list[str], captured: list[str]) -> EvidenceRequest:
    """The report's pictures of the `shown` studies, every image of the `captured` ones."""
    report = {r["image_id"] for rows in report_rows(images, shown).values() for r in rows}
    mine = pc.is_in(images["study_key"], pa.array(captured, pa.string()))
    capture = set(images.filter(mine)["image_id"].to_pylist())
    return EvidenceRequest(frozenset(report), frozenset(capture))


def _pixels(
    inp: ScreenInput, ids: list[str], parts: ScoreParts, size: int
) -> tuple[ray.data.Dataset | None, str]:
    """The dataset of the images' pixels (None: there are none), and why an image it has
    no row for is missing: a folder's decoded in tasks; stored ones (shards, a PACS's kept
    frames) read here, only the chosen images', and handed over through the object store."""
    if inp.rows is not None and not inp.remote:
        return picture_dataset(inp, ids, size), "no row came back for it"
    if inp.rows is None:
        stored, missing = stored_pixels(inp, ids), "not found in the shards any more"
    else:
        stored, missing = parts.kept(ids, inp.content), "its pixels were not kept while scoring"
    n = stored.num_rows
    tables = [stored.slice(i, EVIDENCE_BATCH) for i in range(0, n, EVIDENCE_BATCH)]
    return (ray.data.from_arrow(tables) if tables else None), missing


def make_evidence(
    inp: ScreenInput,
    model: ScreeningModel,
    images: pa.Table,
    request: EvidenceRequest,
    parts: ScoreParts,
    *,
    gpus: int,
    actors: int | None = None,
) -> Evidence:
    """The requested pictures, made by actors in one Ray Data pass (see the docstring)."""
    ids = request.ids
    if not ids:
        return Evidence({})
    size = model.info.size
    report = max(size, DISPLAY_SIZE) if inp.rows is not None else (inp.shard_size or size)
    with data_context():
        ds, missing = _pixels(inp, ids, parts, kept_size(inp, size) or report)
    if ds is None:
        return _collect(images, ids, {}, missing)
    batches = -(-len(ids) // EVIDENCE_BATCH)
    made = predict(
        ds,
        bundle_bytes(model.folder),
        batch_size=EVIDENCE_BATCH,
        actors=min(actors or gpus or max(1, cluster_cpus() // 4), batches),
        gpus_per_actor=1.0 if gpus else 0.0,
        predictor=EvidenceMaker,
        predictor_kwargs={"request": request, "report_size": report},
    )
    rows: dict[str, dict[str, Any]] = {}
    bar = console.progress("pictures", len(ids), "images")
    for batch in made.iter_batches(batch_format="pyarrow", batch_size=None):
        rows.update((r["image_id"], r) for r in batch.to_pylist())
        bar.advance(batch.num_rows)
    bar.close()
    return _collect(images, ids, rows, missing)


def _collect(
    images: pa.Table, ids: list[str], rows: dict[str, dict[str, Any]], missing: str
) -> Evidence:
    """The pass's rows as pictures and failures (an image without a row: `missing`)."""
    study = dict(zip(images["image_id"].to_pylist(), images["study_key"].to_pylist(), strict=True))
    pictures: dict[str, ImagePictures] = {}
    failures: list[PictureFailure] = []
    for image_id in ids:
        row = rows.get(image_id, {"error_type": "missing", "reason": missing})
        if row.get("error_type") is not None:
            failures.append(
                PictureFailure(study[image_id], image_id, row["error_type"], row["reason"])
            )
            continue
        capture = unpack(row)
        pixels, cam = capture if capture is not None else (None, None)
        pictures[image_id] = ImagePictures(row.get("thumbnail"), row.get("overlay"), pixels, cam)
    return Evidence(pictures, tuple(failures))


def study_pictures(
    evidence: Evidence, images: pa.Table, study_keys: list[str]
) -> dict[str, tuple[ReportImage, ...]]:
    """For each study key: its report pictures (`report_rows`), those the pass made (the
    others are in `evidence.failures`)."""
    out: dict[str, tuple[ReportImage, ...]] = {}
    rows = report_rows(images, study_keys) if study_keys else {}
    for key in study_keys:
        made = [(r, evidence.pictures.get(r["image_id"])) for r in rows.get(key, [])]
        out[key] = tuple(
            ReportImage(
                image_id=r["image_id"],
                view=r["view"],
                prob=float(r["prob"]),
                thumbnail=p.thumbnail,
                cam=p.overlay,
            )
            for r, p in made
            if p is not None and p.thumbnail is not None
        )
    return out
