"""Real radiographs as a user has them: a FracAtlas subset through every command.

FracAtlas (../shared/data/fracatlas: Abedeen et al., Scientific Data 10, 521 (2023), CC BY
4.0) is a plain folder with `labels.csv`. The subset: the first images (by path) of each
(body part, label) stratum — hands, shoulders, and `leg`, `hip`, `mixed`, which are not
among MURA's seven — plus two files the release ships truncated. Copied into tmp_path (the
archive layer does not follow links out of the archive), never into the repo.

inspect → ingest → train (two epochs, the `scratch` recipe) → evaluate → screen, through the
CLI: the truncated files are quarantined with their reason, `leg` has its own row in every
per-part table, the split is stratified and written beside the shards, and the model carries
its threshold, its one-channel stem and its flip TTA into evaluation and screening. No
learning threshold here: bench/real.py measures learning.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.shared_data import FRACATLAS

TRUNCATED = ("images/Non_fractured/IMG0004028.jpg", "images/Non_fractured/IMG0004029.jpg")
PER_STRATUM = 6

pytestmark = pytest.mark.skipif(
    not (FRACATLAS / "labels.csv").is_file(), reason=f"FracAtlas is not at {FRACATLAS}"
)


def _mura(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with (FRACATLAS / "labels.csv").open(newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["path"])
    chosen, taken = [], Counter()
    for row in rows:
        stratum = (row["body_part"], row["label"])
        if row["path"] not in TRUNCATED and taken[stratum] < PER_STRATUM:
            taken[stratum] += 1
            chosen.append(row)
    chosen += [r for r in rows if r["path"] in TRUNCATED]
    root = tmp_path_factory.mktemp("fracatlas") / "fracatlas"
    for row in chosen:
        (root / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FRACATLAS / row["path"], root / row["path"])
    with (root / "labels.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(chosen[0]))
        writer.writeheader()
        writer.writerows(chosen)
    return root


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~3 min on an idle 2-core machine; 9 on a busy one
def test_a_fracatlas_subset_through_inspect_ingest_train_evaluate_and_screen(
    subset: Path, tmp_path: Path
) -> None:
    inspected = _mura("inspect", str(subset)).stdout
    table = {line.split()[0]: line.split()[1:] for line in inspected.splitlines() if line}
    for part in ("XR_HAND", "XR_SHOULDER", "hip", "leg", "mixed"):
        assert part in table, inspected
    assert "OTHER" not in table and table["leg"][:2] == [str(2 * PER_STRATUM + 2), "6"]

    shards = tmp_path / "shards"
    ingested = _mura("ingest", str(subset), "--out", str(shards), "--size", "64").stdout
    assert "quarantined 2" in ingested and "law holds: True" in ingested, ingested
    quarantine = pq.read_table(shards / "quarantine.parquet").to_pylist()
    assert sorted(q["path"] for q in quarantine) == sorted(TRUNCATED)
    assert all(q["reason"].startswith("truncated image") for q in quarantine), quarantine
    with (shards / "split.csv").open(newline="") as f:
        split = {r["path"]: r["split"] for r in csv.DictReader(f)}
    assert len(split) == 10 * PER_STRATUM + 2
    images = pq.read_table(shards / "images", columns=["split", "body_part"])
    parts, splits = images["body_part"].to_pylist(), images["split"].to_pylist()
    by_stratum = Counter(zip(parts, splits, strict=True))
    assert by_stratum[("leg", "test")] >= 2 and by_stratum[("XR_SHOULDER", "test")] == 2

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    trained = _mura(
        *("train", str(shards), "--recipe", "scratch", "--epochs", "2", "--size", "64"),
        *("--tracking-uri", uri, "--storage", str(tmp_path / "rr"), "--register", "fa"),
    ).stdout
    assert "registered fa version 1" in trained, trained
    assert any(line.startswith("leg ") for line in trained.splitlines()), trained

    evaluated = _mura("evaluate", "models:/fa/1", str(shards), "--tracking-uri", uri).stdout
    assert any(line.startswith("leg ") for line in evaluated.splitlines()), evaluated

    out = tmp_path / "screen"
    _mura(
        *("screen", str(subset), "--out", str(out), "--model", "models:/fa/1"),
        *("--tracking-uri", uri, "--pictures", "1"),
    )
    report = pq.read_table(out / "studies.parquet").to_pylist()
    assert len(report) == 10 * PER_STRATUM and {r["body_part"] for r in report} >= {"leg", "hip"}
    quarantined = pq.read_table(out / "quarantine.parquet").to_pylist()  # paths pseudonymized
    assert len(quarantined) == 2, quarantined
    assert all(q["reason"].startswith("truncated image") for q in quarantined), quarantined
