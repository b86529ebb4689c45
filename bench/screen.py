"""`mura screen` throughput against the bare model and a plain DataLoader script; peak RSS.

    .venv/bin/python bench/screen.py [--studies 800] [--size 128] [--model densenet169]
        [--batch-size 32] [--archive DIR] [--work DIR] [--skip-rss] [--json PATH]

In one process, same images (a synthetic 512 px MURA archive of >= 2,000 images), same
model bundle (random-init DenseNet-169, the seed-densenet recipe at --size; no ImageNet
weights offline, and weights do not change the cost), same batch size, all on this CPU:
 (a) bare model: shard pixels already in memory as one uint8 tensor, eval preset + forward
     under inference_mode, torch on all cores (model load and the read excluded);
 (b) `run_screen` end to end, from shards ingested at --size (ingest not timed) and from the
     raw PNG archive: from the call to its return — model check on the driver, listing or
     shard checks, pseudonymization (PNG shards are ingested without it, so the scoring
     actor pseudonymizes keys, as `mura screen` does by default), Ray Data read/decode +
     scoring actor (start-up and model load included), study aggregation, pictures and
     CAMs, report files. Ray itself is started once before any timing; MLflow is off
     (track=False). The images/s each run reports itself (scoring stage only) is printed
     beside it;
 (c) what a user would write instead: a torch Dataset over the PNG paths (PIL open, 'L',
     resize to size x size), DataLoader(num_workers=2), the same model and eval preset, study
     means in a dict; timed from loader creation to the study means (listing and model load
     excluded; its decode is lighter than screening's: no windowing, stretched not padded).
Then (unless --skip-rss) peak memory while screening the raw archive and a 4x larger raw
archive, in the same Ray session, sampled every 0.2 s (psutil): PSS summed over this process
and all its descendants (Ray's GCS, raylet, workers: the goal's figure, since PSS counts each
shared page — the object store — once), the RSS sum (shared pages once per process that
maps them), and the driver's own RSS.

A full run synthesizes ~2,000 + ~8,000 images and takes roughly ten minutes on two cores;
pass --work DIR to keep (and on the next run reuse) archives and shards.

Size 128, not the recipes' 224/320: DenseNet-169 forwards ~50 images/s at 128 px on two cores
and about 6x fewer at 320, which would stretch the run (four passes, then 5x the images in
the RSS runs) to most of an hour; the ratios compare pipelines around the same model, and a
smaller input makes the per-image overheads weigh more, not less. Goals on this CPU with
DenseNet-169: (b)/(a) >= 0.85, (b)/(c) >= 1.1, peak RSS 4x / 1x <= 1.1. Figures go to
--json; the last line printed is `ratio <(b shards)/(a)>`.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import ray
import torch
from common import PeakMemory, bench_archive, tree_memory, write_figures
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mura_core.archive import list_archive
from mura_core.checkpoints import load_bundle, save_bundle
from mura_core.model_info import ModelInfo
from mura_core.models import build_model
from mura_core.privacy import KEY_FILE_ENV
from mura_core.recipes import recipe
from mura_core.screen_summary import ScreenSummary
from mura_core.shards import pixels_array, read_images
from mura_core.transforms import EvalPreset
from pipelines.ingest import IngestConfig, run_ingest
from pipelines.runtime.cluster import cluster_cpus, ensure_ray
from pipelines.screen.config import ScreenConfig
from pipelines.screen.inputs import is_shards
from pipelines.screen.run import run_screen

RECIPES = {"densenet169": "seed-densenet", "cnn": "seed-cnn"}
LABELS = {
    "a": "(a) bare model, tensors in memory",
    "b_shards": "(b) mura screen, shards",
    "b_raw": "(b) mura screen, raw PNG",
    "c": "(c) PNG + DataLoader(2) script",
}


@dataclass(frozen=True)
class Measured:
    images: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.images / self.seconds


def make_bundle(folder: Path, model: str, size: int) -> Path:
    """A random-init model of the recipe at `size`, saved as the bundle every pass uses."""
    info = ModelInfo.from_recipe(recipe(RECIPES[model]).override(size=size))
    with torch.random.fork_rng():  # seeded weights without touching the global generator
        torch.manual_seed(0)
        net = build_model(model, size=size)
    return save_bundle(folder, net, info)


def bare_model(model: nn.Module, preset: EvalPreset, pixels: torch.Tensor, batch: int) -> Measured:
    """(a): eval preset + forward over uint8 images already in memory (one warm-up batch)."""
    with torch.inference_mode():
        model(preset(pixels[:batch]))
        start = time.perf_counter()
        for i in range(0, len(pixels), batch):
            torch.sigmoid(model(preset(pixels[i : i + batch])))
    return Measured(len(pixels), time.perf_counter() - start)


class PngFiles(Dataset):
    """(c): what a user writes — open each PNG with PIL, gray, resize, to a uint8 tensor."""

    def __init__(self, paths: list[str], size: int) -> None:
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[i]) as image:
            gray = image.convert("L").resize((self.size, self.size), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(gray).copy()), i


def plain_script(
    model: nn.Module, preset: EvalPreset, paths: list[str], size: int, batch: int
) -> Measured:
    """(c): DataLoader(num_workers=2) → model → study means (study = the image's folder)."""
    start = time.perf_counter()
    loader = DataLoader(PngFiles(paths, size), batch_size=batch, num_workers=2)
    probs: dict[str, list[float]] = {}
    with torch.inference_mode():
        for images, index in loader:
            prob = torch.sigmoid(model(preset(images))).reshape(-1)
            for i, p in zip(index.tolist(), prob.tolist(), strict=True):
                probs.setdefault(os.path.dirname(paths[i]), []).append(p)
    means = {study: sum(v) / len(v) for study, v in probs.items()}
    assert sum(len(v) for v in probs.values()) == len(paths) and means
    return Measured(len(paths), time.perf_counter() - start)


def screen(source: Path, bundle: Path, out: Path, batch: int) -> tuple[Measured, ScreenSummary]:
    """(b): one `run_screen`, timed from the call to its return; (images, s) and its summary."""
    start = time.perf_counter()
    result = run_screen(
        ScreenConfig(source=source, out=out, models=(str(bundle),), batch_size=batch, track=False)
    )
    seconds = time.perf_counter() - start
    if result.counts.quarantined:
        print(f"warning: {result.counts.quarantined} images quarantined", file=sys.stderr)
    return Measured(result.counts.images, seconds), result.summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=800, help="~2.6 images a study")
    parser.add_argument("--size", type=int, default=128, help="model input and shard size")
    parser.add_argument("--model", choices=sorted(RECIPES), default="densenet169")
    parser.add_argument("--batch-size", type=int, default=32, help="mura screen's default")
    parser.add_argument("--archive", type=Path, default=None, help="reuse this archive")
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="keep archives, shards and reports here, and reuse them on the next run "
        "(default: a temporary folder, removed at the end)",
    )
    parser.add_argument("--skip-rss", action="store_true", help="no 1x vs 4x peak-RSS runs")
    parser.add_argument(
        "--rss-only", action="store_true", help="only the 1x vs 4x peak-memory runs"
    )
    parser.add_argument("--json", type=Path, default=Path("bench/results/screen_cpu.json"))
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)

    work = args.work or Path(tempfile.mkdtemp(prefix="mura-bench-screen-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault(KEY_FILE_ENV, str(work / "site.key"))  # not the user's key file
    kept = {name: work / name for name in ("archive", "archive4x") if (work / name).is_dir()}
    archive = bench_archive(work, args.studies, args.archive or kept.get("archive"))
    big = None
    if not args.skip_rss:
        big = bench_archive(work, 4 * args.studies, kept.get("archive4x"), name="archive4x")
    bundle = make_bundle(work / "bundle", args.model, args.size)
    ensure_ray()
    shards = work / f"shards{args.size}"
    if not is_shards(shards):
        run_ingest(IngestConfig(source=archive, out=shards, size=args.size))
    paths = [ref.location.path for ref in list_archive(archive).refs]
    print(
        f"{len(paths)} images, {args.model} at {args.size}px, batch {args.batch_size}, "
        f"{cores} cores (Ray: {cluster_cpus()} CPUs), work folder {work}"
    )

    model, info = load_bundle(bundle)
    preset = info.eval_preset()
    pixels = torch.from_numpy(np.array(pixels_array(read_images(shards, ["pixels"])["pixels"])))
    runs: dict[str, Measured] = {}
    reported: dict[str, float] = {}
    if not args.rss_only:
        runs["a"] = bare_model(model, preset, pixels, args.batch_size)
        runs["c"] = plain_script(model, preset, paths, args.size, args.batch_size)
        for key, source in (("b_shards", shards), ("b_raw", archive)):
            runs[key], summary = screen(source, bundle, work / f"report-{key}", args.batch_size)
            reported[key] = summary.images_per_s or 0.0
    del pixels

    print(f"{'measurement':<36} {'images':>7} {'seconds':>8} {'images/s':>9}")
    for key in [k for k in ("a", "b_shards", "b_raw", "c") if k in runs]:
        m = runs[key]
        extra = f"  (scoring stage alone: {reported[key]:.1f})" if key in reported else ""
        print(f"{LABELS[key]:<36} {m.images:>7} {m.seconds:>8.2f} {m.rate:>9.1f}{extra}")
    ratios = {
        f"{b}/{base}": runs[b].rate / runs[base].rate
        for base in ("a", "c")
        for b in ("b_shards", "b_raw")
        if b in runs and base in runs
    }
    goals = {"b_shards/a": "  goal >= 0.85", "b_shards/c": "  goal >= 1.1"}
    for name, value in ratios.items():
        b, base = name.split("/")
        print(f"({b.replace('_', ' ')})/({base}) = {value:.3f}{goals.get(name, '')}")

    rss: dict[str, float] = {}
    if big is not None:
        del model
        gc.collect()
        rss["baseline_mb"] = tree_memory()[0] / 2**20
        for label, source in (("1x", archive), ("4x", big)):
            # each from a fresh Ray, as each `mura screen` command starts: idle workers left
            # by earlier runs in one session would otherwise be charged to the later run
            ray.shutdown()
            ensure_ray()
            with PeakMemory() as peak:
                m, _ = screen(source, bundle, work / f"report-rss-{label}", args.batch_size)
            for i, kind in enumerate(("tree_rss", "tree_pss", "driver_rss")):
                rss[f"peak_{kind}_{label}_mb"] = peak.peak[i] / 2**20
            rss[f"images_{label}"] = m.images
        for kind in ("tree_rss", "tree_pss", "driver_rss"):
            rss[f"ratio_{kind}"] = rss[f"peak_{kind}_4x_mb"] / rss[f"peak_{kind}_1x_mb"]
        rss["ratio"] = rss["ratio_tree_pss"]
        print(
            f"peak memory screening raw PNG, 1x {rss['images_1x']} vs 4x {rss['images_4x']} images"
        )
        for kind, what in (
            ("tree_pss", "PSS, process tree (shared pages counted once)"),
            ("tree_rss", "RSS, process tree (shared pages once per process)"),
            ("driver_rss", "RSS, driver process"),
        ):
            goal = "  goal <= 1.1" if kind == "tree_pss" else ""
            print(
                f"  {what:<50} 1x {rss[f'peak_{kind}_1x_mb']:6.0f} MB   4x "
                f"{rss[f'peak_{kind}_4x_mb']:6.0f} MB   ratio {rss[f'ratio_{kind}']:.3f}{goal}"
            )
    ray.shutdown()

    write_figures(
        args.json,
        args,
        cores=cores,
        labels=LABELS,
        runs={k: {**asdict(m), "images_per_s": m.rate} for k, m in runs.items()},
        screen_reported_images_per_s=reported,
        ratios=ratios,
        rss=rss,
    )
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)  # archives are large; --work keeps them
    if "b_shards/a" in ratios:
        print(f"ratio {ratios['b_shards/a']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
