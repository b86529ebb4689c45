"""Scale: the cost per image and the memory of each stage at 1x, 4x and 16x of a base size.

    .venv/bin/python bench/scale.py --work DIR [--scales 1,4,16] [--base 0.0625]
        [--stages list,ingest,train,screen,densenet] [--densenet-scales 4] [--json PATH]

Archives are synthetic and MURA-like (`SynthConfig.like_mura`: MURA-v1.1's studies, views
and abnormal rates per body part and split, 512 px), at `base x scale` of MURA: with the
defaults 1x = 1/16 of MURA (2,500 images), 4x = 1/4 and 16x = MURA's own size (40,005
images). They are written once into DIR (`mura-x1`, `mura-x4`, `mura-x16`; the time it took is
printed) and reused. In one process, at each scale, each stage from a fresh local Ray (as
each `mura` command starts one; Ray's start excluded):
 - list: `list_archive` of the archive (CSV + folder walk), no Ray;
 - ingest: `run_ingest` at 224 px (listing, decode + resize in Ray tasks, Parquet, manifest);
 - train: one epoch of the seed CNN at 224 px on those shards with its recipe (augmentation,
   batch 64), then its evaluation, MLflow logging (SQLite in DIR) and registration, all of
   `run_training`; the epoch's own seconds are shown apart;
 - screen: `run_screen` of the raw archive with a seed-CNN bundle at 224 px (list, decode,
   score, study report, pictures and CAMs; MLflow off).
Each archive is read once before its stages (untimed: the page cache is warm, as for the
single-process rate). For each: wall time, ms and images per second, the peak PSS of the
whole process tree (driver + Ray's processes; PSS counts a shared page, the object store,
once) and of the driver's RSS, sampled every 0.5 s, and the bytes Ray's object store
spilled to disk.
Then the goals, as ratios:
 - per-image cost flat: (s/image at the largest scale) / (at 1x) <= 1.1, each stage;
 - memory flat: peak tree PSS at the largest scale / at 1x <= 1.1, ingest and screening;
 - ingest at the largest scale / (single-process decode + resize at 224 px of a sample of
   1,500 of its images, listing excluded, x cores) >= 0.85;
 - densenet: screening from shards with DenseNet-169 at 128 px / the bare model on the same
   images (uint8 pixels in memory, eval preset + forward, torch on all cores) >= 0.9, at
   each of --densenet-scales (default the 4x archive: 10,000 images take ~7 minutes each
   way on two cores; 16x is allowed and takes ~30).
Figures go to --json (default bench/results/scale_cpu.json); every goal gets a line
`ratio NAME VALUE (goal ...)`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from common import PeakMemory, write_figures
from screen import bare_model, make_bundle

from mura_core import imaging
from mura_core.archive import list_archive
from mura_core.checkpoints import load_bundle
from mura_core.privacy import KEY_FILE_ENV
from mura_core.recipes import recipe
from mura_core.shards import Manifest, pixels_array, read_images
from mura_core.synth import SynthConfig, synthesize
from pipelines.ingest import IngestConfig, run_ingest
from pipelines.runtime.cluster import cluster_cpus, ensure_ray
from pipelines.screen.config import ScreenConfig
from pipelines.screen.run import run_screen
from pipelines.train.config import TrainConfig
from pipelines.train.errors import TrainCollapsed
from pipelines.train.run import run_training

SIZE = 224
STAGES = ("list", "ingest", "train", "screen", "densenet")


@dataclass
class Stage:
    """One stage at one scale: what it did, how long, how much memory."""

    stage: str
    scale: int
    images: int
    seconds: float
    peak_tree_pss_mb: float = 0.0
    peak_driver_rss_mb: float = 0.0
    spilled_mb: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ms_per_image(self) -> float:
        return 1000 * self.seconds / max(self.images, 1)


def archive(work: Path, base: float, scale: int) -> Path:
    """The MURA-like archive at base x scale, written once (and timed) into `work`."""
    root = work / f"mura-x{scale}"
    if not root.is_dir():
        start = time.perf_counter()
        made = synthesize(root, SynthConfig.like_mura(base * scale))
        print(
            f"wrote mura-x{scale}: {made.n_images} images, {len(made.studies)} studies in "
            f"{time.perf_counter() - start:.0f}s",
            flush=True,
        )
    return root


def warm(root: Path) -> None:
    """Read every file once (untimed), so each stage reads from the page cache, as the
    single-process rate does: a cold disk is another benchmark."""
    for path in root.rglob("*"):
        if path.is_file():
            path.read_bytes()


def spilled_bytes() -> int:
    """Bytes this Ray session's object store spilled to disk so far (raylet's own count)."""
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    state = get_state_from_address(ray.get_runtime_context().gcs_address)
    return int(get_memory_info_reply(state).store_stats.spilled_bytes_total)


def measured(name: str, scale: int, run: Callable[[], tuple[int, dict[str, Any]]]) -> Stage:
    """`run()` (returning images and extras) in a fresh local Ray, timed, memory sampled."""
    ray.shutdown()
    gc.collect()
    ensure_ray()
    with PeakMemory(interval=0.5) as peak:
        start = time.perf_counter()
        images, extra = run()
        seconds = time.perf_counter() - start
    spilled = spilled_bytes()
    kinds = sorted(peak.kinds.items(), key=lambda kv: -kv[1])
    extra["pss_by_process_mb"] = {k: round(v / 2**20) for k, v in kinds}
    stage = Stage(
        name,
        scale,
        images,
        seconds,
        peak.peak[1] / 2**20,
        peak.peak[2] / 2**20,
        spilled / 2**20,
        extra,
    )
    print(
        f"  {name:<8} x{scale:<3} {images:>6} images {seconds:>8.1f}s "
        f"{stage.ms_per_image:>7.2f} ms/image  PSS {stage.peak_tree_pss_mb:>6.0f} MB  "
        f"driver {stage.peak_driver_rss_mb:>5.0f} MB  spilled {stage.spilled_mb:.0f} MB",
        flush=True,
    )
    return stage


def listing(root: Path, scale: int) -> Stage:
    start = time.perf_counter()
    found = list_archive(root)
    return Stage("list", scale, len(found.refs), time.perf_counter() - start)


def ingest(root: Path, shards: Path, size: int = SIZE) -> tuple[int, dict[str, Any]]:
    shutil.rmtree(shards, ignore_errors=True)
    result = run_ingest(IngestConfig(source=root, out=shards, size=size))
    return result.manifest.counts.ingested, {"shards": result.manifest.shards}


def train_epoch(shards: Path, work: Path, scale: int) -> tuple[int, dict[str, Any]]:
    """One epoch and what follows it; a model that one epoch leaves on one side of its
    threshold is not registered (`TrainCollapsed`), which costs the same: it counts."""
    name = f"scale-x{scale}-{int(time.time())}"
    extra: dict[str, Any] = {}
    try:
        run_training(
            TrainConfig(
                shards=shards,
                recipe=recipe("seed-cnn").override(epochs=1),
                tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
                storage=work / "ray_results",
                name=name,
                experiment="bench-scale",
                register="bench-scale-cnn",
            )
        )
    except TrainCollapsed:
        extra["collapsed"] = True
    for path in (work / "ray_results" / name).glob("checkpoint_*/history.json"):
        extra["epoch_seconds"] = round(json.loads(path.read_text())[-1]["epoch_seconds"], 1)
    images = Manifest.read(shards).counts.ingested  # trained, validated or tested: each once
    return images, extra


def screen_raw(root: Path, bundle: Path, out: Path) -> tuple[int, dict[str, Any]]:
    shutil.rmtree(out, ignore_errors=True)
    result = run_screen(ScreenConfig(source=root, out=out, models=(str(bundle),), track=False))
    summary = result.summary
    return summary.counts.images, {"scoring_images_per_s": summary.images_per_s}


def single_process_rate(root: Path, sample: int = 1500) -> float:
    """Images/s of decode + resize to 224 px, one process, a systematic sample of images."""
    refs = list_archive(root).refs
    picked = refs[:: max(1, len(refs) // sample)][:sample]
    start = time.perf_counter()
    for ref in picked:
        imaging.load_image(ref.location.path, frame=ref.frame, size=SIZE)
    return len(picked) / (time.perf_counter() - start)


def densenet_ratio(root: Path, work: Path, scale: int) -> Stage:
    """DenseNet-169 at 128 px: screening from shards vs the bare model, same images."""
    shards = work / f"shards-x{scale}-128"
    if not (shards / "manifest.json").is_file():
        ensure_ray()
        ingest(root, shards, size=128)
    bundle = make_bundle(work / "bundle-densenet128", "densenet169", 128)
    model, info = load_bundle(bundle)
    pixels = torch.from_numpy(np.array(pixels_array(read_images(shards, ["pixels"])["pixels"])))
    torch.set_num_threads(os.cpu_count() or 1)
    bare = bare_model(model, info.eval_preset(), pixels, 32)
    del pixels, model
    gc.collect()
    stage = measured(
        "densenet", scale, lambda: screen_raw(shards, bundle, work / f"report-dn-x{scale}")
    )
    stage.extra["bare_images_per_s"] = round(bare.rate, 2)
    stage.extra["ratio"] = round(stage.images / stage.seconds / bare.rate, 3)
    print(
        f"  densenet x{scale}: screening {stage.images / stage.seconds:.1f} images/s, bare "
        f"model {bare.rate:.1f} images/s",
        flush=True,
    )
    return stage


def goals(stages: list[Stage], single: float | None, cores: int) -> dict[str, tuple[float, str]]:
    """Every goal's ratio and its bound."""
    by = {(s.stage, s.scale): s for s in stages}
    scales = sorted({s.scale for s in stages if s.stage != "densenet"})
    lo, hi = scales[0], scales[-1]
    out: dict[str, tuple[float, str]] = {}
    for name in ("list", "ingest", "train", "screen"):
        if (name, lo) in by and (name, hi) in by and lo != hi:
            ratio = by[name, hi].ms_per_image / by[name, lo].ms_per_image
            out[f"{name}_time_per_image_x{hi}/x{lo}"] = (ratio, "<= 1.1")
    for name in ("ingest", "screen"):
        if (name, lo) in by and (name, hi) in by and lo != hi:
            ratio = by[name, hi].peak_tree_pss_mb / by[name, lo].peak_tree_pss_mb
            out[f"{name}_peak_pss_x{hi}/x{lo}"] = (ratio, "<= 1.1")
    if single and ("ingest", hi) in by:
        rate = by["ingest", hi].images / by["ingest", hi].seconds
        out[f"ingest_x{hi}/(single_process_x{cores}_cores)"] = (rate / (single * cores), ">= 0.85")
    for s in stages:
        if s.stage == "densenet":
            out[f"screen_densenet128_x{s.scale}/bare_model"] = (s.extra["ratio"], ">= 0.9")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=None, help="archives, shards, reports")
    parser.add_argument("--scales", default="1,4,16", help="multiples of the base size")
    parser.add_argument("--base", type=float, default=1 / 16, help="1x, as a fraction of MURA")
    parser.add_argument("--stages", default=",".join(STAGES), help="which stages to run")
    parser.add_argument("--densenet-scales", default="4", help="scales of the DenseNet ratio")
    parser.add_argument("--json", type=Path, default=Path("bench/results/scale_cpu.json"))
    args = parser.parse_args()
    scales = [int(s) for s in args.scales.split(",")]
    wanted = set(args.stages.split(","))
    work = args.work or Path(tempfile.mkdtemp(prefix="mura-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault(KEY_FILE_ENV, str(work / "site.key"))  # not the user's key file
    roots = {s: archive(work, args.base, s) for s in sorted({*scales, 4})}
    bundle = make_bundle(work / "bundle-cnn224", "cnn", SIZE)
    ensure_ray()
    cores = cluster_cpus()
    print(f"{cores} CPUs for Ray (os.cpu_count {os.cpu_count()}), work folder {work}", flush=True)

    stages: list[Stage] = []
    for s in scales:
        shards = work / f"shards-x{s}-{SIZE}"
        warm(roots[s])
        if "list" in wanted:
            stages.append(listing(roots[s], s))
            print(f"  list     x{s:<3} {stages[-1].images:>6} images {stages[-1].seconds:8.2f}s")
        if "ingest" in wanted:
            stages.append(measured("ingest", s, lambda r=roots[s], o=shards: ingest(r, o)))
        if "train" in wanted:
            stages.append(measured("train", s, lambda o=shards, s=s: train_epoch(o, work, s)))
        if "screen" in wanted:
            out = work / f"report-x{s}"
            stages.append(measured("screen", s, lambda r=roots[s], o=out: screen_raw(r, bundle, o)))
    single = single_process_rate(roots[max(scales)]) if "ingest" in wanted else None
    if single:
        print(f"single process decode + resize to {SIZE}: {single:.1f} images/s", flush=True)
    if "densenet" in wanted:
        for s in (int(x) for x in args.densenet_scales.split(",")):
            stages.append(densenet_ratio(roots.get(s) or archive(work, args.base, s), work, s))
    ray.shutdown()
    return report(stages, goals(stages, single, cores), single, cores, args)


def report(
    stages: list[Stage],
    ratios: dict[str, tuple[float, str]],
    single: float | None,
    cores: int,
    args: argparse.Namespace,
) -> int:
    print(
        f"\n{'stage':<9}{'scale':>6}{'images':>8}{'seconds':>10}{'ms/img':>9}{'img/s':>8}"
        f"{'PSS MB':>9}{'driver MB':>10}{'spilled MB':>11}"
    )
    for s in stages:
        print(
            f"{s.stage:<9}{'x' + str(s.scale):>6}{s.images:>8}{s.seconds:>10.1f}"
            f"{s.ms_per_image:>9.2f}{s.images / max(s.seconds, 1e-9):>8.1f}"
            f"{s.peak_tree_pss_mb:>9.0f}{s.peak_driver_rss_mb:>10.0f}{s.spilled_mb:>11.0f}"
        )
    print()
    for name, (value, goal) in ratios.items():
        print(f"ratio {name} {value:.3f} (goal {goal})")
    write_figures(
        args.json,
        args,
        cores=cores,
        single_process_images_per_s=single,
        stages=[{**asdict(s), "ms_per_image": s.ms_per_image} for s in stages],
        ratios={k: {"value": v, "goal": g} for k, (v, g) in ratios.items()},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
