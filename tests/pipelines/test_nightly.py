"""Nightly screening: only new or changed studies, and exactly once across crashes.

Real local Ray, real SQLite MLflow, a synthetic DICOM tree that grows between runs, and
a real kill: a `jobs.nightly` driver SIGKILLed while it scores (and then no process of its
Ray may be left alive, and the next run keeps the scores it had written), and a complete
report the ledger does not hold (a driver that died between the two).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from mura_core.checkpoints import save_bundle
from mura_core.model_info import ModelInfo
from mura_core.models import build_model
from mura_core.recipes import recipe
from mura_core.synth import SynthConfig, synthesize
from pipelines.screen.config import ScreenConfig
from pipelines.screen.folder import SUMMARY
from pipelines.screen.nightly import LEDGER, REPORTS, read_ledger, run_nightly
from tests.processes import kill_driver_when

pytestmark = [pytest.mark.usefixtures("ray_local"), pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("cnn", size=64)
    info = ModelInfo.from_recipe(recipe("seed-cnn").override(size=64), threshold=0.5)
    return save_bundle(tmp_path_factory.mktemp("bundle"), model, info)


def add_studies(archive: Path, studies: int, seed: int, work: Path) -> int:
    """Synthesize a batch of DICOM studies and copy them into the growing archive."""
    batch = synthesize(
        work / f"batch-{seed}", SynthConfig(studies=studies, seed=seed, size=96, format="dicom")
    )
    for path in batch.root.rglob("*"):
        if path.is_file() and path.name != "labels.csv":
            target = archive / path.relative_to(batch.root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    return studies


def nightly(archive: Path, state: Path, bundle: Path, uri: str):
    cfg = ScreenConfig(source=archive, out=state, models=(str(bundle),), tracking_uri=uri)
    return run_nightly(cfg, state)


def nightly_process(archive: Path, state: Path, bundle: Path, uri: str):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobs.nightly",
            str(archive),
            "--state",
            str(state),
            "--model",
            str(bundle),
            "--tracking-uri",
            uri,
            "--batch-size",
            "2",
            "--checkpoint-every",
            "2",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def complete_reports(state: Path) -> list[Path]:
    return sorted(p for p in (state / REPORTS).iterdir() if (p / SUMMARY).is_file())


def assert_exactly_once(state: Path, expected: int) -> None:
    """Ledger: one row per study; complete reports: every study in exactly one of them."""
    ledger = read_ledger(state)
    keys = ledger["study_key"].to_pylist()
    assert len(keys) == len(set(keys)) == expected
    screened: list[str] = []
    for report in complete_reports(state):
        screened += pq.read_table(report / "studies.parquet")["study_key"].to_pylist()
    assert sorted(screened) == sorted(keys)


def test_only_new_or_changed_studies_are_screened(bundle: Path, tmp_path: Path) -> None:
    archive, state, uri = tmp_path / "archive", tmp_path / "state", f"sqlite:///{tmp_path}/m.db"
    archive.mkdir()
    add_studies(archive, 6, seed=41, work=tmp_path)
    first = nightly(archive, state, bundle, uri)
    assert (first.new, first.unchanged, first.ledger) == (6, 0, 6)
    assert first.report is not None and first.report.counts.studies == 6

    add_studies(archive, 3, seed=42, work=tmp_path)
    second = nightly(archive, state, bundle, uri)
    assert (second.new, second.unchanged, second.ledger) == (3, 6, 9)
    new_keys = set(pq.read_table(second.report.out / "studies.parquet")["study_key"].to_pylist())
    assert len(new_keys) == 3 and not new_keys & set(
        pq.read_table(first.report.out / "studies.parquet")["study_key"].to_pylist()
    )

    third = nightly(archive, state, bundle, uri)
    assert (third.new, third.report) == (0, None)

    # one image of a multi-image study disappears: that study (only) is screened again
    studies: dict[Path, list[Path]] = {}
    for path in archive.rglob("*"):
        if path.is_file():
            studies.setdefault(path.parent.parent, []).append(path)
    changed = next(files for files in studies.values() if len(files) > 1)
    changed[0].unlink()
    fourth = nightly(archive, state, bundle, uri)
    assert (fourth.new, fourth.unchanged, fourth.ledger) == (1, 8, 9)
    assert fourth.report.counts.images == len(changed) - 1
    assert len(set(read_ledger(state)["study_key"].to_pylist())) == 9


def test_killed_runs_leave_every_study_exactly_once(bundle: Path, tmp_path: Path) -> None:
    archive, state, uri = tmp_path / "archive", tmp_path / "state", f"sqlite:///{tmp_path}/m.db"
    archive.mkdir()
    total = add_studies(archive, 5, seed=51, work=tmp_path)

    # 1. a complete report the ledger does not hold (its driver died between the two, a
    #    window of milliseconds): the re-run records it and screens nothing again
    first = nightly(archive, state, bundle, uri)
    assert first.new == 5 and len(complete_reports(state)) == 1
    (state / LEDGER).unlink()
    again = nightly(archive, state, bundle, uri)
    assert (again.recovered, again.new, again.report) == (5, 0, None)
    assert_exactly_once(state, total)

    # 2. SIGKILLed while scoring: the half-written report is discarded, its studies are
    #    screened again, but the image scores it had written are kept, not scored again
    total += add_studies(archive, 4, seed=52, work=tmp_path)
    done = set(complete_reports(state))
    proc = nightly_process(archive, state, bundle, uri)

    def parts() -> list[Path]:
        scores = (state / REPORTS).glob("*/.scores/part-*.parquet")
        return [p for p in scores if p.parent.parent not in done]

    killed = kill_driver_when(proc, lambda: bool(parts()), timeout=240)
    assert killed.had_ray, killed.ran  # Ray was there to leak
    assert not killed.left, f"alive 30 s after the driver was killed: {killed.left}"
    partial = [p for p in (state / REPORTS).iterdir() if not (p / SUMMARY).exists()]
    assert partial, "the kill came too late to test anything"
    kept = sum(pq.read_metadata(p).num_rows for p in parts())
    after = nightly(archive, state, bundle, uri)
    assert (after.recovered, after.new) == (0, 4)
    assert after.report is not None and after.report.summary.resumed == kept > 0
    assert not [p for p in (state / REPORTS).iterdir() if not (p / SUMMARY).exists()]
    assert_exactly_once(state, total)
