"""Shared set-up of the benchmarks: a synthetic MURA archive of >= 2,000 images."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from mura_core.sources import list_source
from mura_core.synth import SynthConfig, synthesize


def bench_archive(
    work: Path, studies: int, archive: Path | None = None, *, name: str = "archive"
) -> Path:
    """`archive` if given, else a fresh synthetic one (512 px, as MURA) at `work / name`."""
    if archive is None:
        archive = work / name
        start = time.perf_counter()
        synth = synthesize(archive, SynthConfig(studies=studies, seed=1, size=512))
        print(f"synthesized {synth.n_images} images in {time.perf_counter() - start:.1f}s")
    n_images = len(list_source(archive).refs)
    if n_images < 2000:
        print(f"warning: only {n_images} images (< 2,000): raise --studies", file=sys.stderr)
    return archive
