"""The `mura` command as a user runs it: a real subprocess of the installed entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mura_core.sources import list_source


def _mura(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


def test_help_lists_the_commands() -> None:
    result = _mura("--help")
    assert result.returncode == 0
    for command in ("synth", "inspect", "ingest", "train", "evaluate", "demo"):
        assert command in result.stdout
    synth_help = _mura("synth", "--help").stdout
    assert "--studies" in synth_help and "--format" in synth_help


def test_synth_40_studies_round_trips_through_the_mura_source(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _mura("synth", str(out), "--studies", "40", "--size", "128", "--seed", "4")
    assert result.returncode == 0, result.stderr
    assert (out / "MURA-v1.1" / "train_labeled_studies.csv").is_file()
    assert (out / "MURA-v1.1" / "valid_image_paths.csv").is_file()
    listing = list_source(out)
    assert len(listing.studies()) == 40
    assert "wrote 40 studies" in result.stdout and "XR_" in result.stdout
    assert "total" in result.stdout


def test_synth_dicom_then_inspect(tmp_path: Path) -> None:
    out = tmp_path / "dcm"
    assert (
        _mura("synth", str(out), "--studies", "3", "--format", "dicom", "--size", "96").returncode
        == 0
    )
    result = _mura("inspect", str(out))
    assert result.returncode == 0 and result.stdout.startswith("dicom archive")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("inspect", "/nonexistent/archive"), "source not found"),
        (("synth", "{tmp}", "--studies", "0"), "studies must be >= 1"),
    ],
)
def test_user_errors_are_one_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = _mura(*(a.replace("{tmp}", str(tmp_path / "x")) for a in args))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mura: error:") and message in lines[0]


def test_synth_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    result = _mura("synth", str(tmp_path), "--studies", "1")
    assert result.returncode == 1 and "not empty" in result.stderr


@pytest.mark.slow
def test_demo_runs_every_stage(tmp_path: Path) -> None:
    result = _mura(
        "demo",
        "--out",
        str(tmp_path / "demo"),
        "--studies",
        "40",
        "--size",
        "96",
        "--shard-size",
        "32",
        "--epochs",
        "2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for text in (
        "[demo] 1.",
        "[demo] 2.",
        "[demo] 3.",
        "law holds: True",
        "Table 1",
        "kappa (95% CI)",
        "MLflow run",
        "mlflow ui --backend-store-uri",
    ):
        assert text in result.stdout, text
    assert (tmp_path / "demo" / "mlflow.db").is_file()


def test_ingest_cli_end_to_end(tmp_path: Path) -> None:
    """`mura ingest` as a user runs it: its own local Ray, a summary, non-zero on bad input."""
    archive = tmp_path / "a"
    assert _mura("synth", str(archive), "--studies", "6", "--size", "96").returncode == 0
    result = _mura("ingest", str(archive), "--out", str(tmp_path / "s"), "--size", "48")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "law holds: True" in result.stdout and "ingested" in result.stdout
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["counts"]["found"] == manifest["counts"]["ingested"]
    bad = _mura("ingest", str(tmp_path / "missing"), "--out", str(tmp_path / "s2"))
    assert bad.returncode == 1 and bad.stderr.strip().startswith("mura: error: source not found")
    assert not (tmp_path / "s2").exists()


def test_jobs_ingest_module_has_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jobs.ingest", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "--rows-per-shard" in result.stdout
