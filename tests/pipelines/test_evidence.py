"""The evidence actor (pipelines.screen.evidence), called as Ray Data calls it, one batch at a time.

No Ray here: the class is built from the bundle's bytes as each actor builds it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from mura_core.screen_report import PNG_SIGNATURE
from mura_core.shards import encode_pixels
from pipelines.archives.decode import PROBLEM_TYPE
from pipelines.screen.evidence import EvidenceMaker, EvidenceRequest, unpack
from pipelines.shards.predict import bundle_bytes
from tests.pipelines.test_screen import random_bundle


def _rows(size: int, problem: dict | None = None) -> pa.Table:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (3, size, size), dtype=np.uint8)
    return pa.table(
        {
            "image_id": ["a", "b", "c"],
            "pixels": encode_pixels(pixels),
            "problem": pa.array([None, None, problem], PROBLEM_TYPE),
        }
    )


def test_report_and_capture_pictures_and_failures_come_back_per_row(tmp_path: Path) -> None:
    bundle = bundle_bytes(random_bundle(tmp_path / "bundle", size=64))
    request = EvidenceRequest(report=frozenset({"a", "b"}), capture=frozenset({"b", "c"}))
    maker = EvidenceMaker(bundle, request=request, report_size=48)
    bad = {"error_type": "corrupt_file", "reason": "cannot decode"}
    out = {r["image_id"]: r for r in maker(_rows(96, bad)).to_pylist()}
    assert out.keys() == {"a", "b", "c"}
    # a: report only; b: both, from one map (at the model's 64 px) of the 96 px pixels
    assert out["a"]["thumbnail"].startswith(PNG_SIGNATURE) and unpack(out["a"]) is None
    pixels, cam = unpack(out["b"])
    assert pixels.shape == (96, 96) and cam.shape == (64, 64)
    assert cam.min() >= 0 and cam.max() <= 1
    assert out["b"]["overlay"].startswith(PNG_SIGNATURE) and out["b"]["error_type"] is None
    # c: its decode failed; reported, never skipped
    assert (out["c"]["error_type"], out["c"]["reason"]) == ("corrupt_file", "cannot decode")
