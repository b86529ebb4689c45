"""The `mura` command as a user runs it: a real subprocess of the installed entry point."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mura_core.archive import list_archive
from mura_core.synth.plan import mura_cells

PROJECT = Path(__file__).resolve().parents[2]


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -c CODE ARGS` from the project root: a user's process, patched by the test."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        timeout=600,
    )


def _mura(
    *args: str, cwd: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


# the demo takes ~3.5 min on an idle 2-core machine; a busy one (load 8-25) took over 10
BUSY_DEMO_S = 1800


def test_help_lists_the_commands() -> None:
    result = _mura("--help")
    assert result.returncode == 0
    for command in ("synth", "inspect", "ingest", "train", "evaluate", "demo"):
        assert command in result.stdout
    synth_help = _mura("synth", "--help").stdout
    assert "--studies" in synth_help and "--format" in synth_help


def test_only_the_chosen_command_is_imported() -> None:
    """`mura --help` and a light command never import torch or MLflow; every command's
    parser still builds in full (all `COMMANDS` registered, with their one line)."""
    code = textwrap.dedent(
        """
        import contextlib, io, sys
        from jobs.cli import COMMANDS, build_parser, main
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
            main(["--help"])
        with contextlib.redirect_stderr(io.StringIO()):
            assert main(["inspect", "/nonexistent"]) == 1
        print(sorted(m for m in ("torch", "mlflow", "ray.train") if m in sys.modules))
        full = build_parser()
        print(len(COMMANDS), "torch" in sys.modules)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == ["[]", "14 True"], result.stdout


def test_synth_40_studies_round_trips_through_the_mura_source(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _mura("synth", str(out), "--studies", "40", "--size", "128", "--seed", "4")
    assert result.returncode == 0, result.stderr
    assert (out / "MURA-v1.1" / "train_labeled_studies.csv").is_file()
    assert (out / "MURA-v1.1" / "valid_image_paths.csv").is_file()
    listing = list_archive(out)
    assert len(listing.studies()) == 40
    assert "wrote 40 studies" in result.stdout and "XR_" in result.stdout
    assert "total" in result.stdout


def test_synth_like_mura_has_mura_mix_and_inspect_counts_it(tmp_path: Path) -> None:
    """A 1/200 MURA (74 studies): every (body part, split) cell of MURA's, as its CSVs say."""
    out = tmp_path / "mura"
    result = _mura("synth", str(out), "--like-mura", "0.005", "--size", "96", "--seed", "2")
    assert result.returncode == 0, result.stderr
    listing = list_archive(out)
    cells = {(str(r.body_part), str(r.split)) for r in listing.refs}
    assert len(cells) == 14 and listing.problems == ()  # 7 body parts x train, valid
    assert len(listing.studies()) == sum(n + a for n, a, _ in mura_cells(0.005).values())


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
        (("synth", "{tmp}", "--studies", "1", "--body-parts", "XR_KNEE"), "--body-parts"),
        (("synth", "{tmp}"), "give --studies N, or --like-mura"),
        (("synth", "{tmp}", "--like-mura", "--studies", "5"), "--like-mura sets the studies"),
        (("synth", "{tmp}", "--like-mura", "40"), "the MURA scale must be in (0, 16]"),
        (("train", "{tmp}"), "{tmp}"),
        (("screen", "{tmp}", "--out", "{tmp}-out", "--threshold", "2"), "threshold must be in"),
        (
            ("screen", "{tmp}", "--out", "{tmp}-out", "--notify", "hl7://ris:2575"),
            "--notify hl7://ris:2575 is not a worklist address: use mllp://HOST:PORT",
        ),
        (
            ("nightly", "{tmp}", "--state", "{tmp}-state", "--notify-token", "{tmp}"),
            "--notify-token needs --notify ADDR",
        ),
        (
            ("screen", "{tmp}", "--out", "{tmp}-out", "--notify", "mllp://127.0.0.1:2575"),
            "--notify needs a PACS source",
        ),
        (
            (
                "screen",
                "{tmp}",
                "--out",
                "{tmp}-o",
                "--write-back",
                "--write-back-objects",
                "sr,pm",
            ),
            "--write-back-objects 'sr,pm': unknown 'pm'; use one or more of sr,sc,heatmap,kos",
        ),
        (
            ("nightly", "{tmp}", "--state", "{tmp}-state", "--write-back-objects", "sr"),
            "--write-back-objects needs --write-back",
        ),
        (("demo", "--out", "{tmp}", "--viewer"), "--viewer needs --pacs"),
        (("results", "1.2.3", "--pacs", "{tmp}"), "not a PACS address"),
        (("results", "1.2/3", "--pacs", "dimse://PACS@127.0.0.1:1"), "STUDY_UID '1.2/3'"),
    ],
)
def test_user_errors_are_one_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    missing = str(tmp_path / "x")
    result = _mura(*(a.replace("{tmp}", missing) for a in args))
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mura: error:"), result.stderr
    assert message.replace("{tmp}", missing) in lines[0]
    assert "Traceback" not in result.stderr
    assert not Path(missing).exists()  # refused before any work


def test_a_bug_shows_its_traceback_and_asks_for_a_report(tmp_path: Path) -> None:
    """An ordinary exception from library code is a bug, not a user error: exit 70."""
    result = _python(
        """
        import sys
        import jobs.cli

        def broken_listing(*args, **kwargs):
            raise KeyError("boom")

        jobs.cli.list_archive = broken_listing
        sys.exit(jobs.cli.main(["inspect", sys.argv[1]]))
        """,
        str(tmp_path),
    )
    assert result.returncode == 70, result.stderr
    assert "Traceback (most recent call last)" in result.stderr
    assert "broken_listing" in result.stderr and "KeyError: 'boom'" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("mura: internal error: KeyError: 'boom'"), last
    assert "this is a bug; please report it with the traceback above" in last
    assert "mura: error:" not in result.stderr


def test_a_user_error_raised_in_a_ray_task_is_one_line(tmp_path: Path) -> None:
    """Ray wraps a task's exception (RayTaskError); the CLI still prints the one line."""
    result = _python(
        """
        import sys
        import ray
        import jobs.cli
        from mura_core.archive import SourceError

        @ray.remote
        def list_remotely(root):
            raise SourceError(f"{root}: labels CSV unreadable (in a Ray task)")

        def listing(root, **kwargs):
            return ray.get(list_remotely.remote(str(root)))

        jobs.cli.list_archive = listing
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
        try:
            code = jobs.cli.main(["inspect", sys.argv[1]])
        finally:
            ray.shutdown()
        sys.exit(code)
        """,
        str(tmp_path),
    )
    assert result.returncode == 1, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("mura: ")]
    assert errors == [f"mura: error: {tmp_path}: labels CSV unreadable (in a Ray task)"], errors
    assert "Traceback" not in result.stderr


def test_user_error_unwraps_ray_train_worker_failures() -> None:
    """Ray Train reports a worker's exception inside WorkerGroupError.worker_failures."""
    from ray.train import WorkerGroupError

    from jobs.common import user_error
    from pipelines.train.errors import TrainError

    cause = TrainError("the training split has a single class")
    wrapped = WorkerGroupError("worker 0 failed", {0: cause})
    assert user_error(wrapped) is cause
    assert user_error(WorkerGroupError("worker 0 failed", {0: KeyError("boom")})) is None
    assert user_error(RuntimeError("bug")) is None


def test_every_package_error_is_a_mura_error() -> None:
    """One base: what each package raises for a user-fixable problem is a MuraError."""
    from mura_core.archive import SourceError
    from mura_core.checkpoints import BundleError
    from mura_core.errors import ConfigError, MuraError
    from mura_core.imaging import ImagingError
    from mura_core.privacy import PrivacyError
    from mura_core.recipes import recipe
    from mura_core.shards import ShardsError
    from mura_core.synth import SynthConfig, SynthError
    from pipelines.ingest import IngestError
    from pipelines.registry.model_store import ModelSpecError
    from pipelines.registry.runs import CompareError
    from pipelines.registry.server import MlflowServerError
    from pipelines.registry.tracking import TrackingError
    from pipelines.runtime.submit import SubmitError
    from pipelines.screen.config import ScreenConfig, ScreenError
    from pipelines.train.errors import TrainError

    for cls in (
        BundleError,
        ConfigError,
        ImagingError,
        PrivacyError,
        ShardsError,
        SourceError,
        SynthError,
        CompareError,
        IngestError,
        MlflowServerError,
        ModelSpecError,
        ScreenError,
        SubmitError,
        TrackingError,
        TrainError,
    ):
        assert issubclass(cls, MuraError), cls
    assert issubclass(ConfigError, ValueError)  # callers that validate values still catch it
    with pytest.raises(ConfigError, match="studies must be >= 1"):
        SynthConfig(studies=0)
    with pytest.raises(ConfigError, match="unknown recipe"):
        recipe("no-such-recipe")
    with pytest.raises(ConfigError, match="threshold must be in"):
        ScreenConfig(source=Path("a"), out=Path("b"), models=("m",), threshold=2.0)


def test_synth_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    result = _mura("synth", str(tmp_path), "--studies", "1")
    assert result.returncode == 1 and "not empty" in result.stderr


@pytest.mark.slow
@pytest.mark.timeout(BUSY_DEMO_S + 60)
def test_demo_runs_every_stage_with_a_clean_console(tmp_path: Path) -> None:
    """A small demo: every stage runs, the console holds what a user needs and nothing of
    Ray's (its output is in the log file, whose path is printed once). The seed CNN gets a
    configuration it learns in (bold signs at 64 px, 14 epochs: test study AUROC 0.84 with
    240 studies); DenseNet-169 gets one epoch from random init, which may or may not leave
    it collapsed: the line says which. (With 3 epochs at 32 px each, which model
    collapses changed from one machine to another, and on one both did.)"""
    out = tmp_path / "demo"
    result = _mura(
        *("demo", "--out", str(out), "--studies", "200", "--size", "96"),
        *("--shard-size", "64", "--epochs", "14", "--densenet-epochs", "1", "--incoming", "12"),
        timeout=BUSY_DEMO_S,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    console = (result.stdout + result.stderr).splitlines()
    noisy = [line for line in console if re.search(r"traceback|error|warning", line, re.I)]
    assert noisy == [], noisy
    for n in range(1, 7):
        assert any(line.startswith(f"[demo] {n}/6") for line in console), n
    for text in (
        "law holds: True",
        "seed CNN: test study AUROC",
        "champion → mura-",
        "[demo] done. Stages:",
        "mlflow ui --backend-store-uri",
        str(out / "screening" / "report.html"),
    ):
        assert any(text in line for line in console), text
    densenet = [line for line in console if line.startswith("DenseNet-169: ")]
    assert len(densenet) == 1 and re.search("test study AUROC|training collapsed", densenet[0])
    logs = [line for line in console if line.startswith("Ray's logs: ")]
    assert len(logs) == 1, logs
    log = Path(logs[0].removeprefix("Ray's logs: ").split(" (")[0])
    assert log.parent == out / "logs" and log.stat().st_size > 0
    assert "Ray" in log.read_text() or "ray" in log.read_text()
    assert len(console) <= 80, len(console)
    assert (out / "mlflow.db").is_file() and (out / "compare.png").is_file()


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
