"""Ingest throughput against a plain single-process loop, in one process, same images.

    .venv/bin/python bench/ingest.py [--studies 800] [--size 320] [--archive DIR]

Synthesizes (or reuses) a MURA-layout archive of >= 2,000 images, times a plain loop doing
the same decode + resize with `mura_core.imaging` (no Ray), then times `run_ingest` on a
local Ray with all cores (Ray start-up excluded, listing and Parquet writing included).
Prints both rates and `ratio = ingest / (single-process x cores)`; the last line is
`ratio <value>`. Goal on the 2-core dev machine: >= 0.8.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import ray
from common import bench_archive

from mura_core import imaging
from mura_core.archive import list_archive
from pipelines.ingest import IngestConfig, run_ingest
from pipelines.runtime.cluster import cluster_cpus, ensure_ray


def single_process_rate(archive: Path, size: int) -> tuple[int, float]:
    """Images/s of the obvious loop: list, then decode + resize each image in turn."""
    start = time.perf_counter()
    refs = list_archive(archive).refs
    done = 0
    for ref in refs:
        try:
            imaging.load_image(ref.location.path, frame=ref.frame, size=size)
            done += 1
        except imaging.ImagingError:
            pass
    return done, done / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=800, help="studies to synthesize")
    parser.add_argument("--size", type=int, default=320, help="shard pixel size")
    parser.add_argument("--archive", type=Path, default=None, help="reuse this archive")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each (best kept)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mura-bench-ingest-"))
    archive = bench_archive(work, args.studies, args.archive)
    n_images = len(list_archive(archive).refs)

    single = max(single_process_rate(archive, args.size)[1] for _ in range(args.repeats))
    print(f"single process: {single:.1f} images/s (decode + resize to {args.size})")

    ensure_ray()
    cores = cluster_cpus()
    rates = []
    for i in range(args.repeats):
        result = run_ingest(IngestConfig(source=archive, out=work / f"shards{i}", size=args.size))
        ingested = result.manifest.counts.ingested
        rates.append(ingested / result.seconds)
        print(
            f"ingest run {i + 1}: {ingested} images in {result.seconds:.2f}s "
            f"= {rates[-1]:.1f} images/s ({result.manifest.shards} shards)"
        )
    ray.shutdown()
    best = max(rates)
    ratio = best / (single * cores)
    print(f"images: {n_images}  cores: {cores}  (os.cpu_count {os.cpu_count()})")
    print(f"ingest {best:.1f} images/s vs single-process {single:.1f} images/s x {cores} cores")
    print(f"ratio {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
