"""Node loss, survived: a real three-node Ray cluster (`ray start`), one worker node SIGKILLed
while `mura ingest` decodes, while `mura screen` scores, and while `mura train` is in an epoch.

The jobs run as a user runs them: `python -m jobs.cli … --address GCS` in a process of their
own (their driver attaches to the head node), token auth on. A node is killed as a machine
dies: its raylet and every process of it at once, at a moment when it is provably working
(one of its Ray workers carries the task's or the actor's title). After each kill a fresh
worker node joins, so the next test starts from three nodes again.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mura_core.archive import list_archive
from mura_core.shards import Manifest, read_images
from mura_core.synth import SynthArchive, SynthConfig, synthesize
from tests.pipelines.test_screen import random_bundle
from tests.raycluster import RayCluster, RayNode

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    # worker nodes of 2 CPUs, a head of 1: training's 2 workers (1 CPU each: sized by the
    # 3 CPUs left after a loss) pack onto one worker node, and after that node is killed the
    # restarted group fits on the other, leaving Ray Data the head's CPU
    cluster = RayCluster(tmp_path_factory.mktemp("cluster"), cpus=2, head_cpus=1)
    cluster = cluster.start(workers=2)
    try:
        yield cluster
    finally:
        left = cluster.stop()
        assert not left, f"Ray processes that needed SIGKILL at the end: {sorted(left)}"


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> SynthArchive:
    root = tmp_path_factory.mktemp("node-loss") / "archive"
    return synthesize(root, SynthConfig(studies=90, seed=21, size=192), workers=2)


def _job(cluster: RayCluster, cwd: Path, *argv: str) -> Watch:
    """`mura ARGV` against the cluster, its files in `cwd` (their changes are its progress)."""
    job = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", *argv, "--address", cluster.address],
        cwd=cwd,
        env={**cluster.env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    return Watch(job, lambda: _files(cwd))


@dataclass(frozen=True)
class Kill:
    node: RayNode
    running: dict[int, str]  # its Ray workers that were doing the work: id → title
    at: float  # time.monotonic() of the kill

    def said(self, started: float, end: float) -> str:
        return (
            f"\nkilled {self.node.name} {self.at - started:.1f} s into the job while it ran "
            f"{sorted(set(self.running.values()))}; the job ended {end - self.at:.1f} s later"
        )


def _kill_when_working(
    cluster: RayCluster, watch: Watch, title: str, ready: Callable[[], bool] = lambda: True
) -> Kill:
    """Once `ready()`, wait until a worker node runs a Ray worker whose title holds `title`
    (past its constructor), then kill that node."""
    kills: list[Kill] = []

    def kill_one() -> bool:
        for node in cluster.nodes[1:] if ready() else ():
            if node.killed or node.process.poll() is not None:
                continue
            titles = node.workers().items()
            working = {pid: t for pid, t in titles if title in t and "__init__" not in t}
            if working:
                node.kill()
                kills.append(Kill(node, working, time.monotonic()))
                return True
        return False

    watch.until(kill_one, every=0.02)
    if not kills:
        said = watch.end()[-3000:]
        raise AssertionError(f"no worker node ran {title!r} before the job ended:\n{said}")
    return kills[0]


def _files(root: Path) -> tuple[int, float]:
    """How many entries under `root` and the newest change: a job's progress on disk."""
    count, newest = 0, 0.0
    for path in root.rglob("*"):
        with contextlib.suppress(OSError):  # a temporary file gone between listing and stat
            newest, count = max(newest, path.stat().st_mtime), count + 1
    return count, newest


# A job that still makes progress is waited for however busy the machine is; one that has
# said nothing and changed nothing for this long is stuck (the bound is not a time budget
# for the work, which on a loaded 2-core machine has taken 3x an idle one's).
STALL_S = 300


class Watch:
    """A running job's output, read as it comes, and waits that last as long as the job
    shows life: it prints a line, or `progress()` (a file, a database row) changes."""

    def __init__(self, job: subprocess.Popen[str], progress: Callable[[], object]) -> None:
        self.job, self.progress, self.lines = job, progress, list[str]()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.job.stdout or ():
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def until(self, done: Callable[[], bool], every: float = 0.2) -> None:
        """Return once `done()` (asked every `every` s) or the job has ended; fail when the
        job is stuck (its signs of life are looked at once a second)."""
        seen, moved = (len(self.lines), self.progress()), time.monotonic()
        looked = moved
        while not done() and self.job.poll() is None:
            time.sleep(every)
            if time.monotonic() - looked < 1:
                continue
            looked = time.monotonic()
            now_seen = (len(self.lines), self.progress())
            if now_seen != seen:
                seen, moved = now_seen, looked
            elif looked - moved > STALL_S:
                self.job.kill()
                self._reader.join(timeout=30)
                raise AssertionError(
                    f"the job said nothing and made no progress for {STALL_S} s:\n"
                    + self.output[-3000:]
                )

    def end(self) -> str:
        """The job's whole output once it has ended."""
        self.until(lambda: False)
        self._reader.join(timeout=60)
        return self.output


def _finish(cluster: RayCluster, watch: Watch, name: str) -> tuple[str, float]:
    """The job's output and end time (exit 0 required); a fresh node replaces the dead one
    whatever the job did, so the module's cluster is whole for the next test."""
    try:
        output = watch.end()
    finally:
        if watch.job.poll() is None:
            watch.job.kill()
        cluster.add_worker(name)
        cluster.wait_for(3, timeout=120)
    end = time.monotonic()
    assert watch.job.returncode == 0, output[-4000:]
    return output, end


def test_ingest_survives_a_node_killed_while_decoding(
    cluster: RayCluster, archive: SynthArchive, tmp_path: Path
) -> None:
    out = tmp_path / "shards"
    started = time.monotonic()
    watch = _job(
        cluster,
        tmp_path,
        *("ingest", str(archive.root), "--out", str(out), "--size", "64"),
        *("--batch-size", "2", "--rows-per-shard", "6"),
    )
    staging = lambda: bool(list(out.glob(".staging-*/*.parquet")))  # noqa: E731
    kill = _kill_when_working(cluster, watch, "decode_batch", staging)
    said = kill.said(started, _finish(cluster, watch, f"{kill.node.name}-again")[1])
    counts = Manifest.read(out).counts
    assert counts.found == counts.ingested + counts.quarantined == archive.n_images
    ids = read_images(out, columns=["image_id"]).column("image_id").to_pylist()
    assert len(ids) == len(set(ids)), "an image was written twice"
    expected = {ref.image_id for ref in list_archive(archive.root).refs}
    quarantined = set(pq.read_table(out / "quarantine.parquet")["image_id"].to_pylist())
    assert set(ids) | quarantined == expected, "an image was lost"
    print(said)


def test_screen_survives_a_node_killed_while_scoring(
    cluster: RayCluster, archive: SynthArchive, tmp_path: Path
) -> None:
    bundle = random_bundle(tmp_path / "bundle", size=160)  # ~20 s of scoring: time to kill
    out = tmp_path / "report"
    started = time.monotonic()
    watch = _job(
        cluster,
        tmp_path,
        *("screen", str(archive.root), "--model", str(bundle), "--out", str(out)),
        *("--actors", "3", "--batch-size", "2", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"),
    )
    scoring = (out / ".scores").is_dir  # the driver is about to write scores
    kill = _kill_when_working(cluster, watch, "ScreenPredictor", scoring)
    said = kill.said(started, _finish(cluster, watch, f"{kill.node.name}-again")[1])
    images = pq.read_table(out / "images.parquet")
    studies = pq.read_table(out / "studies.parquet")
    ids = images["image_id"].to_pylist()
    assert len(ids) == len(set(ids)) == archive.n_images, "every image scored exactly once"
    assert studies.num_rows == len(set(studies["study_key"].to_pylist())) == len(archive.studies)
    assert (out / "summary.json").is_file() and (out / "report.html").is_file()
    print(said)


def _epochs_logged(db: Path, key: str) -> list[int]:
    if not db.exists():
        return []
    with contextlib.suppress(sqlite3.OperationalError), sqlite3.connect(db) as con:
        rows = con.execute("SELECT step FROM metrics WHERE key = ? ORDER BY step", (key,))
        return [int(step) for (step,) in rows]
    return []


def test_train_survives_a_node_killed_in_an_epoch(
    cluster: RayCluster, archive: SynthArchive, tmp_path: Path
) -> None:
    shards, db = tmp_path / "shards", tmp_path / "mlflow.db"
    ingest = _job(cluster, tmp_path, "ingest", str(archive.root), "--out", str(shards), "--size=32")
    ingested = ingest.end()
    assert ingest.job.returncode == 0, ingested[-3000:]
    started = time.monotonic()
    watch = _job(
        cluster,
        tmp_path,
        *("train", str(shards), "--recipe", "seed-cnn", "--model", "resnet18", "--size", "32"),
        *("--epochs", "3", "--augment", "none", "--target-sensitivity", "0.5"),
        *("--workers", "2", "--tracking-uri", f"sqlite:///{db}"),
        *("--storage", str(tmp_path / "runs"), "--name", "node-loss"),
    )
    # epoch 1 is done and checkpointed: the kill lands in a later one
    watch.until(lambda: bool(_epochs_logged(db, "val_loss")))
    kill = _kill_when_working(cluster, watch, "RayTrainWorker")
    output, end = _finish(cluster, watch, f"{kill.node.name}-again")
    said = kill.said(started, end)
    # the loss is said (which error names it depends on who notices first: the health check,
    # or the surviving worker's gloo connection reset) and training went on
    assert re.search(r"worker \d failed: \w+", output), output[-3000:]
    for key in ("train_loss", "val_loss"):
        assert _epochs_logged(db, key) == [1, 2, 3], (key, output[-3000:])
    print(said)
