"""Synthetic MURA-like archives with known labels, for the demo, tests and benchmarks.

`synthesize(out, SynthConfig(studies=40))` writes `out/MURA-v1.1/...` with its four CSVs
(format "png") or a DICOM tree with `labels.csv` (format "dicom"). The archive is written
into a sibling temporary folder and renamed into place at the end, so an interrupted run
never leaves a folder that looks complete.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from mura_core.errors import MuraError
from mura_core.synth.anatomy import BODY_PARTS, SIGNS, render_view
from mura_core.synth.plan import StudyPlan, SynthConfig, ViewPlan, plan_archive
from mura_core.synth.writers import (
    DICOM_LABELS,
    MURA_ROOT,
    accession_number,
    render_study,
    study_uid,
    write_dicom_labels,
    write_dicom_study,
    write_mura_csvs,
    write_png_study,
)


class SynthError(MuraError):
    """The archive cannot be written where asked: OUT is not empty, or not writable."""


# Below this many studies a process pool costs more (interpreter start-up) than it saves.
_PARALLEL_MIN_STUDIES = 48


@dataclass(frozen=True)
class SynthArchive:
    """What was written: the root, the config, the plan, and each study's files."""

    root: Path
    config: SynthConfig
    studies: tuple[StudyPlan, ...]
    files: dict[int, tuple[str, ...]]
    seconds: float

    @property
    def n_images(self) -> int:
        return sum(len(v) for v in self.files.values())


def _write_one(args: tuple[Path, SynthConfig, StudyPlan]) -> tuple[int, tuple[str, ...]]:
    root, cfg, study = args
    images = render_study(study, cfg.sign_strength)
    if cfg.format == "png":
        return study.index, tuple(write_png_study(root, study, images))
    return study.index, tuple(write_dicom_study(root, cfg, study, images))


def _prepare_out(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SynthError(
            f"{out} exists and is not empty: choose a new folder (nothing is overwritten)"
        )
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as exc:
        raise SynthError(f"cannot write to {out.parent}: {exc.strerror or exc}") from exc
    return tmp


def synthesize(
    out: str | Path,
    cfg: SynthConfig,
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SynthArchive:
    """Render and write the archive described by `cfg` into `out` (must be new or empty)."""
    start = time.perf_counter()
    out = Path(out).expanduser().resolve()
    tmp = _prepare_out(out)
    studies = plan_archive(cfg)
    jobs = [(tmp, cfg, study) for study in studies]
    workers = workers if workers is not None else (os.cpu_count() or 1)
    files: dict[int, tuple[str, ...]] = {}
    try:
        if workers > 1 and len(studies) >= _PARALLEL_MIN_STUDIES:
            # spawn, not fork: the caller may hold threads (Ray, MLflow) that fork would copy
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                for done, (index, rels) in enumerate(pool.map(_write_one, jobs, chunksize=4), 1):
                    files[index] = rels
                    if progress:
                        progress(done, len(jobs))
        else:
            for done, job in enumerate(jobs, 1):
                index, rels = _write_one(job)
                files[index] = rels
                if progress:
                    progress(done, len(jobs))
        if cfg.format == "png":
            write_mura_csvs(tmp, studies, {i: list(r) for i, r in files.items()})
        else:
            write_dicom_labels(tmp, cfg, studies)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SynthArchive(out, cfg, studies, files, time.perf_counter() - start)


__all__ = [
    "BODY_PARTS",
    "DICOM_LABELS",
    "MURA_ROOT",
    "SIGNS",
    "StudyPlan",
    "SynthArchive",
    "SynthConfig",
    "SynthError",
    "ViewPlan",
    "accession_number",
    "plan_archive",
    "render_study",
    "render_view",
    "study_uid",
    "synthesize",
]
