"""Peak memory of `mura ingest` on an archive of 8000 x 8000 images, against 512 px ones.

The recipe: write two folder archives of the same number of images — 8000 x 8000 PNGs
(64 Mpx each, just under the 64 Mpx limit) in 8-bit and 16-bit, and 512 x 512 PNGs as the
baseline — then ingest each with a local Ray (2 CPUs), sampling the peak PSS of the whole
process tree (driver, raylet, workers, object store; `bench.common.PeakMemory`) and the
peak per kind of process. Printed: seconds, peak tree PSS, the decode workers' peak, and the
ratio large / baseline. Goal: a decode never holds a full-resolution float copy, so the
large archive's peak stays within a few hundred MB of the baseline's (it was ~1.6 GB per
decode and 16 decodes per task before decoding was bounded).

    python -m bench.ingest_large [--images 12] [--side 8000] [--size 320] [--work DIR]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import PeakMemory, write_figures
from pipelines.ingest import IngestConfig, run_ingest
from pipelines.runtime.cluster import start_local_ray

RESULTS = Path(__file__).resolve().parent / "results" / "ingest_large_cpu.json"


def write_archive(root: Path, images: int, side: int) -> Path:
    """`images` PNGs of side x side: a gradient with noise, every other one 16-bit."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, side, dtype=np.float32)
    for i in range(images):
        base = np.add.outer(ramp, ramp[::-1]) / 2
        noise = rng.random((side, side), dtype=np.float32) * 0.05
        if i % 2:
            pixels = ((base + noise) * 4095).astype(np.uint16)  # 12-bit data, 16-bit PNG
        else:
            pixels = ((base + noise) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"img{i:03d}.png", compress_level=1)
    return root


def ingest(archive: Path, out: Path, size: int) -> dict[str, float]:
    """Ingest `archive` into `out`; seconds, peak tree PSS and the decode workers' PSS (MB)."""
    start = time.perf_counter()
    with PeakMemory(interval=0.1) as peak:
        result = run_ingest(IngestConfig(source=archive, out=out, size=size))
    seconds = time.perf_counter() - start
    workers = sum(v for k, v in peak.kinds.items() if k.startswith("ray::"))
    return {
        "images": result.manifest.counts.ingested,
        "seconds": round(seconds, 1),
        "peak_tree_pss_mb": round(peak.peak[1] / 2**20),
        "peak_workers_pss_mb": round(workers / 2**20),
        "peak_driver_rss_mb": round(peak.peak[2] / 2**20),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--side", type=int, default=8000)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="mura-bench-large-"))
    start_local_ray(num_cpus=2)
    figures = {}
    for name, side in (("baseline_512", 512), (f"large_{args.side}", args.side)):
        archive = write_archive(work / name, args.images, side)
        figures[name] = ingest(archive, work / f"{name}-shards", args.size)
        print(name, figures[name])
    large, base = figures[f"large_{args.side}"], figures["baseline_512"]
    ratio = large["peak_tree_pss_mb"] / base["peak_tree_pss_mb"]
    extra = large["peak_tree_pss_mb"] - base["peak_tree_pss_mb"]
    print(f"peak tree PSS large / baseline: {ratio:.2f} (+{extra} MB)")
    write_figures(RESULTS, args, **figures, ratio_large_over_baseline=round(ratio, 2))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
