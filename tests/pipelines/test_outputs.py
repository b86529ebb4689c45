"""Folders the user chose: never touched unless ours, one run at a time, and clean failures.

Through the `mura` command as a user runs it (a subprocess of `jobs.cli`), with an untrained
bundle (what is screened does not matter here) and small synthetic archives:

- `mura nightly` refuses a state folder holding what it did not make, before any work and
  deleting nothing; a missing model on a fresh state leaves no folder; the recovery still
  deletes an incomplete report of ours, and a state of the previous version is adopted.
- two `mura screen` (or `mura ingest`) into one OUT: the second fails at once with one line
  naming OUT and changes nothing; the first completes. The first is paused (SIGSTOP) once
  it holds the lock, so the second meets the lock on a busy machine too.
- the disk fills while `mura screen` (or `mura ingest`) writes: a real full file system (a
  tmpfs the test mounts as root; skipped where mounting is not permitted), filled while the
  run is paused (after its first score part; once its log is beside the shards): one line
  naming the file, exit 1, no temporary file left.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mura_core.synth import SynthArchive
from pipelines.screen.folder import MARKER, SUMMARY
from pipelines.screen.inputs import open_input
from pipelines.screen.nightly import LEDGER, LEDGER_SCHEMA, PENDING, REPORTS, STATE_MARKER
from pipelines.screen.parts import FOLDER as SCORES
from tests.pipelines.test_nightly import add_studies
from tests.pipelines.test_screen import random_bundle

REPO = Path(__file__).resolve().parents[2]
NO_SPACE = os.strerror(errno.ENOSPC)


def mura(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )


def start_mura(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """Exit 1 and exactly one line on stderr, `mura: error: …`, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, (result.returncode, result.stderr[-4000:])
    assert len(lines) == 1 and lines[0].startswith("mura: error: "), lines
    return lines[0]


def last_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """A run that failed under way: exit 1, its console's own lines (where its log is, the
    progress bars), then one line `mura: error: …`, and no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, (result.returncode, result.stderr[-4000:])
    assert lines[-1].startswith("mura: error: "), lines
    assert sum("error" in line for line in lines) == 1 and "Traceback" not in result.stderr, lines
    return lines[-1]


def files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in folder.rglob("*") if p.is_file()}


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name]


def holds_flock(path: Path) -> bool:
    """Whether some process holds a flock on `path`, read from the kernel's lock table
    (/proc/locks) rather than by trying the lock: a test's try would hold it for an
    instant, and a run starting in that instant would be refused."""
    try:
        inode = path.stat().st_ino
    except FileNotFoundError:
        return False
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "FLOCK" in fields and any(f.endswith(f":{inode}") for f in fields):
            return True
    return False


def wait_for(proc: subprocess.Popen[str], ready: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (rc {proc.returncode}) before it was ready:\n{err[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"not ready after {timeout:.0f} s")
        time.sleep(0.02)


@contextlib.contextmanager
def running(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """A run that the test ends, whatever happens (its Ray goes with it:
    pipelines.runtime.guard)."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
                os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=60)


def snapshot(folder: Path) -> dict[str, tuple[int, int] | None]:
    """Every file's size and mtime; only names under logs/ (Ray's processes may write to
    the paused run's log)."""
    out: dict[str, tuple[int, int] | None] = {}
    for p in folder.rglob("*"):
        if p.is_file():
            rel = p.relative_to(folder)
            out[str(rel)] = (
                None if rel.parts[0] == "logs" else (p.stat().st_size, p.stat().st_mtime_ns)
            )
    return out


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained seed CNN at 64 px (what it flags does not matter here)."""
    return random_bundle(tmp_path_factory.mktemp("bundle"))


# ---------------------------------------------------------------- nightly's state folder


@pytest.fixture(scope="module")
def small_dicom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("nightly-archive")
    archive = work / "archive"
    archive.mkdir()
    add_studies(archive, 3, seed=61, work=work)
    return archive


def test_nightly_refuses_a_state_holding_the_users_folders(
    small_dicom: Path, bundle: Path, tmp_path: Path
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    state = tmp_path / "state"
    for name in ("mine-a", "mine-b"):
        (state / REPORTS / name).mkdir(parents=True)
        (state / REPORTS / name / "notes.txt").write_text(f"{name}: keep me\n")
    before = files(state)

    for model in (str(tmp_path / "no-such-model"), str(bundle)):
        line = one_error_line(
            mura(
                "nightly",
                str(small_dicom),
                "--state",
                str(state),
                "--model",
                model,
                "--tracking-uri",
                uri,
            )
        )
        assert str(state) in line and "reports/mine-a" in line and "reports/mine-b" in line
        assert files(state) == before  # both folders and their files intact, nothing added

    # a fresh state and a missing model: every check before any write, so no folder at all
    fresh = tmp_path / "fresh" / "state"
    line = one_error_line(
        mura(
            "nightly",
            str(small_dicom),
            "--state",
            str(fresh),
            "--model",
            str(tmp_path / "no-such-model"),
            "--tracking-uri",
            uri,
        )
    )
    assert "no-such-model" in line
    assert not (tmp_path / "fresh").exists()


def test_a_missing_model_leaves_no_report_folder(
    mura_archive: SynthArchive, tmp_path: Path
) -> None:
    out = tmp_path / "new" / "report"
    line = one_error_line(
        mura(
            "screen",
            str(mura_archive.root),
            "--out",
            str(out),
            "--model",
            str(tmp_path / "no-such-model"),
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
        )
    )
    assert "no-such-model" in line
    assert not (tmp_path / "new").exists()


def _ledger_of_everything(archive: Path, state: Path) -> None:
    """A ledger that holds every study of `archive` as screened (so a run screens nothing
    and needs no Ray): the keys and image sets as the listing gives them."""
    inp = open_input(archive)
    digests = inp.study_digests or {}
    rows = [
        {
            "study_key": k,
            "image_set": d,
            "report": "20250101T000000Z-done",
            "screened_at": dt.datetime(2025, 1, 1, tzinfo=dt.UTC).isoformat(),
        }
        for k, d in sorted(digests.items())
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=LEDGER_SCHEMA), state / LEDGER)


def test_recovery_deletes_only_incomplete_reports_of_ours_and_adopts_an_old_state(
    small_dicom: Path, bundle: Path, tmp_path: Path
) -> None:
    """A state of the previous version (no state marker): a complete report (marked), one
    interrupted after screening began (marked, its scores) and one before (unmarked: that
    version marked a report once screening began, so it holds only our names)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    state = tmp_path / "state"
    reports = state / REPORTS
    done = reports / "20250101T000000Z-done"
    done.mkdir(parents=True)
    (done / MARKER).write_text("mura screening report\n")
    (done / SUMMARY).write_text("{}\n")
    interrupted = reports / "20250102T000000Z-killed"
    (interrupted / SCORES).mkdir(parents=True)
    (interrupted / MARKER).write_text("mura screening report\n")
    (interrupted / PENDING).write_text("")
    early = reports / "20250103T000000Z-early"
    early.mkdir()
    (early / PENDING).write_text("")
    _ledger_of_everything(small_dicom, state)

    result = mura(
        "nightly",
        str(small_dicom),
        "--state",
        str(state),
        "--model",
        str(bundle),
        "--tracking-uri",
        uri,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "nothing new to screen" in result.stdout
    assert (state / STATE_MARKER).is_file()  # adopted
    assert sorted(p.name for p in reports.iterdir()) == [done.name]  # recorded: kept
    assert (done / SUMMARY).is_file()

    # ours now: an unmarked folder with something in it is the user's from here on
    (reports / "mine").mkdir()
    (reports / "mine" / PENDING).write_text("mine\n")
    line = one_error_line(
        mura(
            "nightly",
            str(small_dicom),
            "--state",
            str(state),
            "--model",
            str(bundle),
            "--tracking-uri",
            uri,
        )
    )
    assert "reports/mine" in line and (reports / "mine" / PENDING).read_text() == "mine\n"


# ---------------------------------------------------------------- one run per folder


def _second_run_meets_the_lock(
    first_args: list[str], second_args: list[str], out: Path
) -> subprocess.Popen[str]:
    """Start the first run, pause it once it holds OUT's lock, run the second to its end
    (one line naming OUT, nothing of the first's changed), then let the first go on."""
    proc = start_mura(*first_args)
    wait_for(proc, lambda: holds_flock(out / ".lock"), timeout=180)
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        before = snapshot(out)
        line = one_error_line(mura(*second_args))
        assert str(out) in line and "another" in line, line
        assert snapshot(out) == before
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    return proc


@pytest.mark.slow
def test_two_screens_into_one_out(mura_archive: SynthArchive, bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    args = [
        "screen",
        str(mura_archive.root),
        "--out",
        str(out),
        "--model",
        str(bundle),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
    ]
    with running(_second_run_meets_the_lock(args, args, out)) as first:
        _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-4000:]
    studies = pq.read_table(out / "studies.parquet")
    assert studies.num_rows == len(mura_archive.studies)
    assert (out / SUMMARY).is_file() and (out / MARKER).is_file()
    assert (out / "report.html").read_text().rstrip().endswith("</html>")
    assert not temporaries(out) and not (out / SCORES).exists()


@pytest.mark.slow
def test_two_ingests_into_one_out(mura_archive: SynthArchive, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    args = ["ingest", str(mura_archive.root), "--out", str(out), "--size", "64"]
    with running(_second_run_meets_the_lock(args, args, out)) as first:
        _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-4000:]
    manifest = (out / "manifest.json").read_text()
    assert '"law_holds": true' in manifest
    assert not temporaries(out) and not list(out.glob(".staging-*"))


# ---------------------------------------------------------------- a disk that fills


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real file system of its own (tmpfs, 64 MiB), mounted for the test, or a skip."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk: Path) -> None:
    """Write a ballast file until the file system has not one byte left."""
    with (disk / "ballast").open("wb", buffering=0) as handle:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    handle.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc


LOG_DISK_FILLS = """
import os, sys
from pipelines.runtime.console import console
with open("/dev/full", "wb") as full, console.capture("screen"):
    sys.stdout.write("Ray's chatter, not yet flushed")
    os.dup2(full.fileno(), 1)  # the log's disk is full from here on: the flush fails
    os.dup2(full.fileno(), 2)
print("mura: error: said on the terminal", file=sys.stderr)
"""


def test_a_log_whose_disk_fills_still_gives_the_terminal_back() -> None:
    """What made a full disk's `mura: error:` line vanish: the capture's closing flush
    failed (ENOSPC) before fds 1 and 2 were restored, so the error went to the full log."""
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    said = subprocess.run(
        [sys.executable, "-c", LOG_DISK_FILLS],
        capture_output=True,
        text=True,
        timeout=120,
        env=buffered,
    )
    assert said.returncode == 0, said.stderr
    assert said.stderr.strip().splitlines()[-1] == "mura: error: said on the terminal"


@pytest.mark.slow
def test_a_full_disk_while_screening_is_one_line_and_leaves_no_temporary(
    mura_archive: SynthArchive, bundle: Path, small_disk: Path, tmp_path: Path
) -> None:
    out = small_disk / "report"
    args = [
        "screen",
        str(mura_archive.root),
        "--out",
        str(out),
        "--model",
        str(bundle),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--batch-size",
        "2",
        "--checkpoint-every",
        "4",
    ]
    with running(start_mura(*args)) as proc:
        wait_for(proc, lambda: any((out / SCORES).glob("part-*.parquet")), timeout=300)
        os.kill(proc.pid, signal.SIGSTOP)
        fill(small_disk)
        os.kill(proc.pid, signal.SIGCONT)
        out_text, err = proc.communicate(timeout=600)
    said = subprocess.CompletedProcess(args, proc.returncode, out_text, err)
    line = last_error_line(said)
    assert line.startswith(f"mura: error: cannot write {out}/") and line.endswith(NO_SPACE), line
    assert not temporaries(out), temporaries(out)
    assert not (out / SUMMARY).exists()


@pytest.mark.slow
def test_a_full_disk_while_ingesting_is_one_line_and_leaves_no_temporary(
    mura_archive: SynthArchive, small_disk: Path
) -> None:
    """Filled once the run holds OUT and keeps its log there: Ray's write tasks fail."""
    out = small_disk / "shards"
    args = ["ingest", str(mura_archive.root), "--out", str(out), "--size", "64"]
    with running(start_mura(*args)) as proc:
        wait_for(proc, lambda: any((out / "logs").glob("ingest-*.log")), timeout=300)
        os.kill(proc.pid, signal.SIGSTOP)
        fill(small_disk)
        os.kill(proc.pid, signal.SIGCONT)
        out_text, err = proc.communicate(timeout=600)
    line = last_error_line(subprocess.CompletedProcess(args, proc.returncode, out_text, err))
    assert line.startswith(f"mura: error: cannot write {out}/") and line.endswith(NO_SPACE), line
    assert not temporaries(out), temporaries(out)
    assert not (out / "manifest.json").exists()
