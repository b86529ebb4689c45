"""Screening with a real local Ray and a real SQLite MLflow store.

A model trained in this session screens a fresh synthetic archive (raw PNGs, and the same
archive as shards); random-init bundles cover ensembles, the DICOM privacy check and the
fail-fast errors, which need a model that runs, not one that is right.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
import torch
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from jobs.cli import main as cli
from mura_core.body_parts import BodyPart
from mura_core.checkpoints import WEIGHTS, load_bundle, read_info, save_bundle, write_info
from mura_core.model_info import ModelInfo
from mura_core.models import build_model
from mura_core.recipes import recipe
from mura_core.screen_summary import read_summary
from mura_core.synth import SynthArchive, SynthConfig, study_uid, synthesize
from pipelines.ingest import IngestConfig, run_ingest
from pipelines.screen.config import ScreenConfig
from pipelines.screen.result import ScreenResult
from pipelines.screen.run import run_screen
from tests.chromium import SKIP_REASON, find_chromium, screenshot
from tests.processes import kill_driver_when
from tests.readable import readable

if TYPE_CHECKING:
    from tests.pipelines.conftest import Trained

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def trained(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The session's model in this module's own copy of its store: the runs written here
    (screening runs) are seen by no other module, and theirs not here."""
    return trained.own_store(tmp_path_factory.mktemp("store"))


REPORT_FILES = {
    "studies.parquet",
    "studies.csv",
    "images.parquet",
    "quarantine.parquet",
    "report.html",
    "summary.json",
}


def random_bundle(folder: Path, *, size: int = 64, seed: int = 0, threshold: float = 0.5) -> Path:
    """A seed-CNN bundle with seeded random weights (a model that runs, not a good one)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model("cnn", size=size)
    info = ModelInfo.from_recipe(recipe("seed-cnn").override(size=size), threshold=threshold)
    return save_bundle(folder, model, info)


def screen(source: Path, out: Path, models: tuple[str, ...], uri: str | None, **kw) -> ScreenResult:
    return run_screen(
        ScreenConfig(
            source=source,
            out=out,
            models=models,
            tracking_uri=uri,
            track=uri is not None,
            **kw,
        )
    )


@pytest.fixture(scope="module")
def incoming(tmp_path_factory: pytest.TempPathFactory) -> SynthArchive:
    """A fresh archive the trained model never saw: forearm, bold signs, labels known."""
    return synthesize(
        tmp_path_factory.mktemp("incoming") / "archive",
        SynthConfig(
            studies=40, seed=21, size=160, sign_strength=4.0, body_parts=(BodyPart.FOREARM,)
        ),
    )


@pytest.fixture(scope="module")
def screened(trained: Trained, incoming: SynthArchive, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("screened") / "report"
    spec = f"models:/test-cnn/{trained.result.version}"
    return screen(incoming.root, out, (spec,), trained.uri, pictures=6)


@pytest.mark.slow
def test_one_row_per_study_mean_of_images_and_flags_at_the_model_threshold(
    screened: ScreenResult, incoming: SynthArchive, trained: Trained
) -> None:
    out = screened.out
    assert {p.name for p in out.iterdir()} >= REPORT_FILES
    studies = pq.read_table(out / "studies.parquet").to_pandas()
    images = pq.read_table(out / "images.parquet").to_pandas()
    assert len(studies) == studies.study_key.nunique() == len(incoming.studies)
    assert len(images) == incoming.n_images == screened.counts.images
    assert studies.study_key.str.startswith("st-").all()  # pseudonyms, not MURA paths
    by_study = images.groupby("study_key").prob
    joined = studies.set_index("study_key")
    np.testing.assert_allclose(joined.mean_prob, by_study.mean()[joined.index], rtol=0, atol=1e-12)
    np.testing.assert_allclose(joined.max_prob, by_study.max()[joined.index], rtol=0, atol=1e-12)
    assert (joined.images == by_study.size()[joined.index]).all()
    assert screened.summary.threshold == pytest.approx(trained.result.threshold)
    assert read_summary(out) == screened.summary  # summary.json, written last, reads back
    assert screened.summary.mlflow_run_id == screened.run_id and screened.summary.phases
    assert (studies.threshold == trained.result.threshold).all()
    assert (studies.flagged == (studies.mean_prob > trained.result.threshold)).all()
    assert screened.counts.flagged == int(studies.flagged.sum())
    assert list(studies.flagged) == sorted(studies.flagged, reverse=True)  # flagged first
    assert (studies.model == "test-cnn").all() and (studies.model_version == "1").all()
    # the trained model actually works on unseen studies (same preprocessing as training)
    assert roc_auc_score(studies.label, studies.mean_prob) >= 0.85
    csv_rows = (out / "studies.csv").read_text().strip().splitlines()
    assert len(csv_rows) == len(studies) + 1


@pytest.mark.slow
def test_mlflow_run_carries_counts_report_and_model_version(
    screened: ScreenResult, trained: Trained, tmp_path: Path
) -> None:
    client = MlflowClient(trained.uri)
    run = client.get_run(screened.run_id)
    assert client.get_experiment(run.info.experiment_id).name == "mura-screen"
    m = run.data.metrics
    assert m["studies"] == screened.counts.studies and m["images"] == screened.counts.images
    assert m["flagged"] == screened.counts.flagged and m["quarantined"] == 0
    assert m["images_per_s"] > 0
    p = run.data.params
    assert p["model.name"] == "test-cnn" and p["model.version"] == "1"
    assert len(p["source.digest"]) == 16 and float(p["threshold"]) == pytest.approx(
        trained.result.threshold
    )
    assert run.data.tags["mura.model_version"] == "test-cnn/1"
    assert run.data.tags["mura.model_run_id"] == trained.result.run_id
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert logged == {f"report/{name}" for name in REPORT_FILES}
    assert (screened.out / "reidentify.csv").stat().st_mode & 0o777 == 0o600


@pytest.mark.slow
def test_report_renders_in_headless_chromium(screened: ScreenResult, tmp_path: Path) -> None:
    if find_chromium() is None:
        pytest.skip(SKIP_REASON)
    html = (screened.out / "report.html").read_text()
    assert "http://" not in html and "https://" not in html
    assert html.count("data:image/png;base64,") >= 2 * min(6, screened.counts.flagged)
    png = tmp_path / "report.png"
    screenshot(screened.out / "report.html", png, width=1200, height=2000)
    shutil.copy(png, Path("/tmp/mura-screen-report.png"))  # for a human to look at


@pytest.mark.slow
def test_shards_give_the_same_scores_as_the_raw_archive(
    screened: ScreenResult, incoming: SynthArchive, trained: Trained, tmp_path: Path
) -> None:
    shards = tmp_path / "shards"
    run_ingest(IngestConfig(source=incoming.root, out=shards, size=64))
    result = screen(shards, tmp_path / "report", (trained.result.model_uri,), None)
    assert result.summary.source.kind == "shards"
    raw = pq.read_table(screened.out / "studies.parquet").to_pandas().set_index("study_key")
    sh = pq.read_table(result.out / "studies.parquet").to_pandas().set_index("study_key")
    assert set(sh.index) == set(raw.index)  # same site key → same pseudonyms
    np.testing.assert_allclose(sh.mean_prob, raw.mean_prob[sh.index], atol=1e-6)


def test_ensemble_averages_its_members(mura_archive: SynthArchive, tmp_path: Path) -> None:
    a = random_bundle(tmp_path / "a", seed=1, threshold=0.4)
    b = random_bundle(tmp_path / "b", seed=2, threshold=0.6)
    probs = {}
    for name, models in (("a", (str(a),)), ("b", (str(b),)), ("ab", (f"{a},{b}",))):
        result = screen(mura_archive.root, tmp_path / f"out-{name}", models, None, pictures=2)
        table = pq.read_table(result.out / "images.parquet").to_pandas()
        probs[name] = table.set_index("image_id").prob.sort_index()
    assert result.summary.threshold == pytest.approx(0.5)
    assert result.summary.model.members == 2
    np.testing.assert_allclose(probs["ab"], (probs["a"] + probs["b"]) / 2, atol=1e-6)
    assert not np.allclose(probs["a"], probs["b"])


def test_a_model_with_per_part_thresholds_flags_each_study_at_its_part_s(
    mura_archive: SynthArchive, tmp_path: Path
) -> None:
    """Thresholds the model carries per body part flag each study at its own; --threshold
    overrides them all."""
    folder = random_bundle(tmp_path / "m", seed=3, threshold=0.5)
    info = read_info(folder)
    parts = {"XR_WRIST": 0.0, "XR_HAND": 1.0}  # every wrist flagged, no hand
    write_info(folder, dataclasses.replace(info, part_thresholds=parts))
    result = screen(mura_archive.root, tmp_path / "out", (str(folder),), None, pictures=0)
    studies = pq.read_table(result.out / "studies.parquet").to_pandas()
    expected = studies.body_part.map(parts).fillna(0.5)
    assert (studies.threshold == expected).all()
    assert (studies.flagged == (studies.mean_prob > expected)).all()
    assert studies[studies.body_part == "XR_WRIST"].flagged.all()
    assert not studies[studies.body_part == "XR_HAND"].flagged.any()
    assert {"XR_WRIST", "XR_HAND"} <= set(studies.body_part) and len(set(studies.body_part)) > 2
    fixed = screen(
        mura_archive.root, tmp_path / "fixed", (str(folder),), None, pictures=0, threshold=0.5
    )
    studies = pq.read_table(fixed.out / "studies.parquet").to_pandas()
    assert (studies.threshold == 0.5).all()
    assert (studies.flagged == (studies.mean_prob > 0.5)).all()


def _dicom_identifiers(root: Path) -> set[str]:
    values: set[str] = set()
    for path in root.rglob("*"):
        if not path.is_file() or path.name == "labels.csv":
            continue
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        for keyword in (
            "PatientName",
            "PatientID",
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "SOPInstanceUID",
            "AccessionNumber",
        ):
            value = str(ds.get(keyword, "") or "")
            if len(value) >= 6:
                values.add(value)
        values.update(part for part in path.relative_to(root).parts[:-1] if len(part) >= 6)
    return values


def test_dicom_identifiers_never_reach_mlflow_the_logged_report_or_the_log(
    dicom_archive: SynthArchive, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Through the CLI in its own process (its own local Ray), so that Ray's own output
    reaches the real stdout/stderr and is captured into REPORT/logs/ too (inside pytest,
    Python-level writes go to pytest's capture instead). Its temporary folders (TMPDIR, which
    its Ray workers inherit) are all gone when it exits: a model folder left per actor once
    filled the disk."""
    bundle = random_bundle(tmp_path / "bundle", threshold=0.0)  # flag all: every picture
    db, out = tmp_path / "mlflow.db", tmp_path / "report"
    # short: the dashboard's multiprocessing forkserver binds an AF_UNIX socket under TMPDIR
    # (108 bytes at most), which a pytest-xdist worker's tmp_path overran
    scratch = Path(tempfile.mkdtemp(prefix="mura-test-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(scratch, ignore_errors=True))
    argv = ["screen", str(dicom_archive.root), "--model", str(bundle), "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "jobs.cli", *argv, "--tracking-uri", f"sqlite:///{db}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TMPDIR": str(scratch), "RAY_TMPDIR": "/tmp"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert not [p.name for p in scratch.iterdir() if p.name.startswith("mura-")]
    assert read_summary(out).counts.studies == len(dicom_archive.studies)
    identifiers = _dicom_identifiers(dicom_archive.root)
    assert len(identifiers) > 3 * len(dicom_archive.studies)
    logged = [p for p in (tmp_path / "mlartifacts").rglob("*") if p.is_file()]
    assert {p.name for p in logged} >= REPORT_FILES
    written = [p for p in out.rglob("*") if p.is_file() and p.name != "reidentify.csv"]
    assert any(p.parent.name == "logs" and p.stat().st_size for p in written)  # Ray's output
    for path in [*logged, *written, db]:
        data = readable(path)
        leaked = [v for v in identifiers if v.encode() in data]
        assert not leaked, f"{path.name} holds {leaked[:3]}"
    private = out / "reidentify.csv"
    assert private.stat().st_mode & 0o777 == 0o600
    text = private.read_text()
    assert all(study_uid(dicom_archive.config, s) in text for s in dicom_archive.studies)


def test_the_privacy_grep_finds_identifiers_when_they_are_there(
    dicom_archive: SynthArchive, tmp_path: Path
) -> None:
    """Control for the test above: without pseudonyms the same grep finds the identifiers."""
    bundle = random_bundle(tmp_path / "bundle")
    result = screen(
        dicom_archive.root, tmp_path / "report", (str(bundle),), None, pseudonymize="never"
    )
    data = readable(result.out / "images.parquet")
    assert any(v.encode() in data for v in _dicom_identifiers(dicom_archive.root))


def test_a_killed_driver_leaves_no_ray_process_and_the_rerun_resumes(
    mura_archive: SynthArchive, tmp_path: Path
) -> None:
    """`mura screen` in its own process, its driver SIGKILLed once some image scores are
    written: nothing of its local Ray outlives it (pipelines.runtime.guard), the re-run into
    the same OUT scores only the images without a score, and its report equals an
    uninterrupted run's."""
    bundle = random_bundle(tmp_path / "bundle")
    out = tmp_path / "report"
    argv = ["screen", str(mura_archive.root), "--model", str(bundle), "--out", str(out)]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobs.cli",
            *argv,
            "--batch-size",
            "2",
            "--checkpoint-every",
            "4",
            "--tracking-uri",
            f"sqlite:///{tmp_path}/m.db",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    scored = lambda: len(list((out / ".scores").glob("part-*.parquet"))) >= 1  # noqa: E731
    killed = kill_driver_when(proc, scored, timeout=120)
    assert not (out / "summary.json").exists(), "the kill came too late to test anything"
    assert killed.had_ray, killed.ran
    assert not killed.left, f"alive 30 s after the driver was killed: {killed.left}"
    kept = sum(pq.read_metadata(p).num_rows for p in (out / ".scores").glob("part-*.parquet"))
    assert 0 < kept < mura_archive.n_images

    again = screen(mura_archive.root, out, (str(bundle),), None, batch_size=2)
    whole = screen(mura_archive.root, tmp_path / "whole", (str(bundle),), None, batch_size=2)
    assert again.summary.resumed == kept and whole.summary.resumed == 0
    assert again.summary.counts == whole.summary.counts
    assert again.summary.counts.images == mura_archive.n_images
    assert not (out / ".scores").exists()  # the report holds every score now
    for name in ("images.parquet", "studies.parquet", "quarantine.parquet"):
        a, b = pq.read_table(out / name), pq.read_table(tmp_path / "whole" / name)
        assert a.column_names == b.column_names and a.num_rows == b.num_rows, name
        for column in a.column_names:
            x, y = a[column].to_pylist(), b[column].to_pylist()
            if column == "screened_at":
                continue
            if column.endswith("prob"):
                assert np.allclose(x, y, rtol=0, atol=1e-6), (name, column)
            else:
                assert x == y, (name, column)


def _cli_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert cli(["screen", *argv]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("mura: error: "), lines
    assert sum(line.startswith("mura: error") for line in lines) == 1, lines
    return lines[-1]


def test_whole_run_problems_fail_before_any_work_with_one_line(
    mura_archive: SynthArchive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = str(random_bundle(tmp_path / "bundle", size=64))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    archive = str(mura_archive.root)

    err = _cli_error(
        capsys,
        archive,
        "--out",
        str(tmp_path / "r1"),
        "--model",
        "models:/nope/1",
        "--tracking-uri",
        uri,
    )
    assert "models:/nope/1 does not resolve" in err
    assert not (tmp_path / "r1" / "summary.json").exists()

    err = _cli_error(capsys, archive, "--out", str(tmp_path / "r2"), "--model", str(tmp_path))
    assert "not a model bundle folder" in err

    shards = tmp_path / "shards32"
    run_ingest(IngestConfig(source=mura_archive.root, out=shards, size=32))
    err = _cli_error(
        capsys,
        str(shards),
        "--out",
        str(tmp_path / "r3"),
        "--model",
        bundle,
        "--tracking-uri",
        uri,
    )
    assert "takes 64px images but the shards" in err and "32px" in err

    one_channel = tmp_path / "gray"
    model, info = load_bundle(Path(bundle))
    state = model.state_dict()
    first = next(k for k in state if k.endswith("weight"))
    state[first] = state[first][:, :1]
    save_bundle(one_channel, model, info)
    torch.save(state, one_channel / WEIGHTS)
    err = _cli_error(capsys, archive, "--out", str(tmp_path / "r4"), "--model", str(one_channel))
    assert "gray" in err and "weights" in err

    empty = tmp_path / "empty"
    empty.mkdir()
    err = _cli_error(
        capsys, str(empty), "--out", str(tmp_path / "r5"), "--model", bundle, "--tracking-uri", uri
    )
    assert "no images" in err or "empty" in err

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    err = _cli_error(
        capsys, archive, "--out", str(blocker / "sub"), "--model", bundle, "--tracking-uri", uri
    )
    assert "cannot write" in err

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    err = _cli_error(
        capsys, archive, "--out", str(foreign), "--model", bundle, "--tracking-uri", uri
    )
    assert "not empty" in err and (foreign / "keep.txt").read_text() == "mine"

    err = _cli_error(
        capsys,
        archive,
        "--out",
        str(tmp_path / "r6"),
        "--model",
        bundle,
        "--tracking-uri",
        "http://127.0.0.1:9",
    )
    assert "127.0.0.1:9" in err
