"""Shared set-up of the benchmarks: a synthetic MURA archive of >= 2,000 images, and peak
memory of a process tree (PSS, RSS) sampled while a block runs."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from pathlib import Path

from mura_core.archive import list_archive
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
    n_images = len(list_archive(archive).refs)
    if n_images < 2000:
        print(f"warning: only {n_images} images (< 2,000): raise --studies", file=sys.stderr)
    return archive


def write_figures(path: Path, args: argparse.Namespace, **figures: object) -> None:
    """The run's flags and figures, as JSON at `path` (bench/results/...)."""
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"config": config, **figures}, indent=2) + "\n")
    print(f"figures written to {path}")


def _title(proc: object) -> str:
    """A process's kind: `ray::MapWorker(...)` → `ray::MapWorker`, else its program name."""
    import psutil

    with contextlib.suppress(psutil.Error):
        cmd = proc.cmdline()  # type: ignore[attr-defined]
        first = (cmd[0] if cmd else proc.name()).split("(")[0]  # type: ignore[attr-defined]
        return first if first.startswith("ray::") else Path(first).name
    return "?"


def tree_memory(by_kind: dict[str, int] | None = None) -> tuple[int, int, int]:
    """(RSS, PSS) summed over this process and all its descendants (Ray's processes
    included), and this driver's own RSS, in bytes. PSS splits each shared page (the object
    store, shared libraries) between the processes that map it, so its sum counts memory
    once; the RSS sum counts a shared page once per process. Given `by_kind`, the PSS per
    kind of process (`_title`) is added into it."""
    import psutil  # vendored by Ray (ray/thirdparty_files), on the path once ray is imported

    me = psutil.Process()
    rss = pss = 0
    for proc in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a worker that exited meanwhile
            info = proc.memory_full_info()
            rss += info.rss
            pss += info.pss
            if by_kind is not None:
                kind = "driver" if proc.pid == me.pid else _title(proc)
                by_kind[kind] = by_kind.get(kind, 0) + info.pss
    return rss, pss, me.memory_info().rss


class PeakMemory:
    """Peaks of `tree_memory()` while the block runs, sampled in a background thread;
    `kinds` holds the PSS per kind of process at the sample where the tree's PSS peaked."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval, self.peak = interval, (0, 0, 0)
        self.kinds: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _update(self) -> None:
        kinds: dict[str, int] = {}
        now = tree_memory(kinds)
        if now[1] > self.peak[1]:
            self.kinds = kinds
        self.peak = tuple(max(a, b) for a, b in zip(self.peak, now, strict=True))

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._update()

    def __enter__(self) -> PeakMemory:
        self._update()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._update()
