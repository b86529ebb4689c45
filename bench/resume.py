"""A big run killed at 90 %, then run again: how long the re-run takes, and that it equals
an uninterrupted run.

    .venv/bin/python bench/resume.py --work DIR [--scale 16] [--screen-scale 4] [--at 0.9]

Uses the archives and results `bench/scale.py --work DIR` left (`mura-xN`, `shards-xN-224`,
`report-xN`, `bundle-cnn224`). For ingest (at --scale, default MURA's size) and screening
(at --screen-scale; the seed CNN at 224 px screens ~35 images/s on two cores), in its own
process as a user runs it: `mura ingest` / `mura screen`, SIGKILLed once the rows already on
disk (staged shard files; score parts) reach --at of the images, then the same command
again (score parts are written every 1000 images: --at 0.85 kills a 10,000-image screening
at 9,000). Prints the time to the kill, the re-run's time and what it kept, and compares the
result with the uninterrupted run's (`bench/scale.py`'s): the shard rows (ids and pixels)
or the report's tables (probabilities to 1e-6).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from common import write_figures

from mura_core.privacy import KEY_FILE_ENV
from mura_core.shards import read_images

REPO = Path(__file__).resolve().parents[1]


def rows_in(files: list[Path]) -> int:
    """Rows of the whole Parquet files among `files` (one being written has no footer)."""
    rows = 0
    for path in files:
        try:
            rows += pq.read_metadata(path).num_rows
        except (OSError, pa.ArrowInvalid):
            continue
    return rows


def run_until(argv: list[str], done: Callable[[], int], at: int) -> float:
    """Run `mura ARGV`; SIGKILL it once `done()` >= `at`; seconds until the kill."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", *argv],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    while proc.poll() is None and done() < at:
        time.sleep(0.5)
    if proc.poll() is not None:
        raise SystemExit(f"mura {argv[0]} ended before {at} rows were on disk")
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its group; its guard sweeps Ray
    proc.wait()
    return time.perf_counter() - start


def rerun(argv: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "jobs.cli", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    said = next((line for line in out.stdout.splitlines() if line.startswith("resuming")), "")
    return time.perf_counter() - start, said


def same_tables(a: Path, b: Path, names: list[str]) -> bool:
    for name in names:
        x, y = pq.read_table(a / name), pq.read_table(b / name)
        if x.column_names != y.column_names or x.num_rows != y.num_rows:
            return False
        for column in x.column_names:
            if column == "screened_at":
                continue
            u, v = x[column].to_pylist(), y[column].to_pylist()
            if column.endswith("prob"):
                if not np.allclose(u, v, rtol=0, atol=1e-6):
                    return False
            elif u != v:
                return False
    return True


def ingest(work: Path, scale: int, at: float) -> dict[str, object]:
    root, out = work / f"mura-x{scale}", work / f"resume-shards-x{scale}"
    shutil.rmtree(out, ignore_errors=True)
    argv = ["ingest", str(root), "--out", str(out), "--size", "224"]
    total = rows_in(sorted((work / f"shards-x{scale}-224" / "images").glob("*.parquet")))
    killed = run_until(argv, lambda: rows_in(list(out.glob(".staging-*/*.parquet"))), at * total)
    kept = rows_in(list(out.glob(".staging-*/*.parquet")))
    seconds, said = rerun(argv)
    a, b = (read_images(o).sort_by("image_id") for o in (out, work / f"shards-x{scale}-224"))
    return {
        "images": total,
        "killed_after_s": round(killed, 1),
        "kept": kept,
        "rerun_s": round(seconds, 1),
        "said": said,
        "equals_uninterrupted": a.equals(b),
    }


def screen(work: Path, scale: int, at: float) -> dict[str, object]:
    root, out = work / f"mura-x{scale}", work / f"resume-report-x{scale}"
    shutil.rmtree(out, ignore_errors=True)
    bundle = work / "bundle-cnn224"
    argv = ["screen", str(root), "--model", str(bundle), "--out", str(out)]
    argv += ["--tracking-uri", f"sqlite:///{work / 'resume-mlflow.db'}"]
    total = pq.read_metadata(work / f"report-x{scale}" / "images.parquet").num_rows
    parts = lambda: rows_in(list((out / ".scores").glob("part-*.parquet")))  # noqa: E731
    killed = run_until(argv, parts, at * total)
    kept = parts()
    seconds, said = rerun(argv)
    names = ["images.parquet", "studies.parquet", "quarantine.parquet"]
    return {
        "images": total,
        "killed_after_s": round(killed, 1),
        "kept": kept,
        "rerun_s": round(seconds, 1),
        "said": said,
        "equals_uninterrupted": same_tables(out, work / f"report-x{scale}", names),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="bench/scale.py's --work")
    parser.add_argument("--scale", type=int, default=16, help="the ingest's archive")
    parser.add_argument("--screen-scale", type=int, default=4, help="the screening's archive")
    parser.add_argument("--at", type=float, default=0.9, help="kill when this share is done")
    parser.add_argument("--stages", default="ingest,screen", help="which runs to kill")
    parser.add_argument("--json", type=Path, default=Path("bench/results/resume_cpu.json"))
    args = parser.parse_args()
    os.environ[KEY_FILE_ENV] = str(args.work / "site.key")  # scale.py's pseudonyms
    runs = {"ingest": (ingest, args.scale), "screen": (screen, args.screen_scale)}
    figures = {
        name: run(args.work, scale, args.at)
        for name, (run, scale) in runs.items()
        if name in args.stages.split(",")
    }
    for name, f in figures.items():
        print(
            f"{name}: {f['images']} images, killed after {f['killed_after_s']}s with "
            f"{f['kept']} done; the re-run took {f['rerun_s']}s; equals the uninterrupted "
            f"run: {f['equals_uninterrupted']}\n  {f['said']}"
        )
    write_figures(args.json, args, **figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
