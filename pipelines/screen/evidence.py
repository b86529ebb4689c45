"""The evidence actor: Grad-CAM maps and pictures of the images a screening shows or writes
back, made in one Ray Data pass after scoring (kept out of `pipelines.screen`, whose imports
— MLflow, plots — would slow the actor's start).

`EvidenceMaker` is a `Predictor` (the bundle loaded once per actor, on its GPU when it has
one). Its rows carry an image id and its pixels at the pass's size P, or the reason they
could not be had (`problem`, as a decode task writes it). Per row, as `EvidenceRequest`
asks:

- **capture** (a flagged study written back): the P-px pixels and their Grad-CAM map (at
  the model's input size, as the eval preset resizes), for the Secondary Capture;
- **report** (one of the report's pictures): the thumbnail and the CAM overlay as PNG at
  the report's size R (the pixels shrunk from P when P > R).

An image asked for both has one map, made once.

Every row comes out, one schema (`EVIDENCE_SCHEMA`): with its pictures, or with the
`Failure` that stopped them (the decode's, or the CAM's), so the driver reports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from mura_core.cam import overlay_png, pixel_maps
from mura_core.imaging import one_line
from mura_core.imaging.geometry import resize_pad
from mura_core.records import Failure
from mura_core.schema import arrow_schema
from mura_core.screen_report import thumbnail_png
from mura_core.shards import pixels_array
from pipelines.shards.predict import BundleRef, Predictor

EVIDENCE_BATCH = 16  # rows per actor call (its maps are made CAM_BATCH at a time)
EVIDENCE_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string()),
        pa.field("thumbnail", pa.binary()),  # report: PNG
        pa.field("overlay", pa.binary()),  # report: PNG
        pa.field("size", pa.int32()),  # capture: side of `pixels` and `cam`
        pa.field("pixels", pa.binary()),  # capture: uint8 (size, size)
        pa.field("cam_size", pa.int32()),  # capture: side of `cam` (the model's input size)
        pa.field("cam", pa.binary()),  # capture: float32 (cam_size, cam_size), in [0, 1]
        *arrow_schema(Failure),
    ]
)


@dataclass(frozen=True)
class EvidenceRequest:
    """The images of one evidence pass, by report image id."""

    report: frozenset[str] = frozenset()  # the report's pictures
    capture: frozenset[str] = frozenset()  # Secondary Captures (flagged, written back)

    @property
    def ids(self) -> list[str]:
        return sorted(self.report | self.capture)


def _failures(batch: pa.Table) -> list[Failure | None]:
    if "problem" not in batch.column_names:
        return [None] * batch.num_rows
    return [None if p is None else Failure(**p) for p in batch.column("problem").to_pylist()]


class EvidenceMaker(Predictor):
    """Maps and pictures of rows (image_id, pixels[, problem]); see the module docstring."""

    def __init__(
        self,
        bundle: dict[str, bytes] | BundleRef,
        torch_threads: int | None = None,
        request: EvidenceRequest = EvidenceRequest(),
        report_size: int = 0,
    ) -> None:
        super().__init__(bundle, torch_threads)
        self.request = request
        self.report_size = report_size

    def _maps(self, pixels: list[np.ndarray]) -> np.ndarray | Failure:
        """Maps of some same-size images, or why they could not be made."""
        try:
            return pixel_maps(self.model, self.preset, np.stack(pixels), self.device)
        except Exception as exc:  # one model's failure is reported per image, not fatal
            return Failure("cam_failed", one_line(f"{type(exc).__name__}: {exc}"))

    def __call__(self, batch: pa.Table) -> pa.Table:
        ids = batch.column("image_id").to_pylist()
        failures = _failures(batch)
        pixels = pixels_array(batch.column("pixels"))
        rows = [i for i, failure in enumerate(failures) if failure is None]
        maps = self._maps([pixels[i] for i in rows]) if rows else np.zeros(0)
        made: dict[int, tuple[np.ndarray, np.ndarray] | Failure] = {
            i: maps if isinstance(maps, Failure) else (pixels[i], maps[n])
            for n, i in enumerate(rows)
        }
        return self._table(ids, failures, made)

    def _for_report(self, image: np.ndarray) -> np.ndarray:
        return resize_pad(image, self.report_size) if len(image) > self.report_size else image

    def _table(
        self,
        ids: list[str],
        failures: list[Failure | None],
        made: dict[int, tuple[np.ndarray, np.ndarray] | Failure],
    ) -> pa.Table:
        rows: list[dict[str, Any]] = []
        for i, image_id in enumerate(ids):
            got = made.get(i, failures[i])
            if not isinstance(got, tuple):
                assert got is not None
                rows.append(
                    {"image_id": image_id, "error_type": got.error_type, "reason": got.reason}
                )
                continue
            image, cam = got
            row: dict[str, Any] = {"image_id": image_id}
            if image_id in self.request.report:
                shown = self._for_report(image)
                row.update(thumbnail=thumbnail_png(shown), overlay=overlay_png(shown, cam))
            if image_id in self.request.capture:
                row.update(
                    size=len(image),
                    pixels=image.tobytes(),
                    cam_size=len(cam),
                    cam=cam.astype(np.float32).tobytes(),
                )
            rows.append(row)
        return pa.Table.from_pylist(rows, schema=EVIDENCE_SCHEMA)


def unpack(row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """A row's capture pixels and map as arrays (None: not a capture row)."""
    if row.get("pixels") is None:
        return None
    side, cam_side = int(row["size"]), int(row["cam_size"])
    pixels = np.frombuffer(row["pixels"], np.uint8).reshape(side, side)
    return pixels, np.frombuffer(row["cam"], np.float32).reshape(cam_side, cam_side)
