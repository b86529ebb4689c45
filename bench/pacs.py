"""Screening from a PACS against screening the same files from a folder, in one process.

    .venv/bin/python bench/pacs.py [--studies 300] [--model densenet169|cnn] [--size 128]
        [--batch-size 32] [--work DIR] [--json PATH]

A synthetic DICOM archive (512 px, as MURA; MONOCHROME1/2, some RLE) is written once and
loaded into a throwaway Orthanc (jobs.demo_orthanc: HTTP auth on, the DICOMweb plugin);
loading is not timed. Then, with Ray started once before any timing and MLflow off,
`run_screen` end to end (from the call to its return: model check, listing, fetch + decode
in Ray Data tasks, scoring actor, aggregation, pictures, report) of
 (f) the folder (the DICOM tree on local disk),
 (w) the same studies from Orthanc by DICOMweb (QIDO-RS listing, WADO-RS per instance),
 (d) the same studies from Orthanc by DIMSE (C-FIND listing, C-GET per instance),
then the folder once more (f2, order effects), after one untimed warm-up run of the folder
(page cache, torch's first calls). Images/s = images scored / run seconds;
the ratios are against the mean of f and f2. Where the time goes: each run's own phases
(listing = the run minus its phases; score = fetch + decode + model), and a sequential
microbenchmark on the driver of reading every instance's bytes: from disk, by WADO-RS and by
C-GET (ms per instance), and of decoding them.

Goal on this machine: (w)/(f) >= 0.8. Figures go to --json; the last line printed is
`ratio <(w)/(f)>`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import ray
import torch

from jobs.demo_orthanc import OrthancConfig, start_orthanc
from mura_core import imaging
from mura_core.archive import list_archive
from mura_core.archive.pacs_archive import list_pacs
from mura_core.checkpoints import save_bundle
from mura_core.model_info import ModelInfo
from mura_core.models import build_model
from mura_core.pacs.address import PacsAuth
from mura_core.pacs.client import PacsOptions
from mura_core.recipes import recipe
from mura_core.synth import SynthConfig, synthesize
from pipelines.runtime.cluster import ensure_ray
from pipelines.screen.config import ScreenConfig
from pipelines.screen.run import run_screen

RECIPES = {"densenet169": "seed-densenet", "cnn": "seed-cnn"}


def _bundle(folder: Path, model: str, size: int) -> Path:
    torch.manual_seed(0)
    info = ModelInfo.from_recipe(recipe(RECIPES[model]).override(size=size), threshold=0.5)
    return save_bundle(folder, build_model(model, size=size), info)


def _archive(work: Path, studies: int) -> Path:
    root = work / f"dicom-{studies}"
    if not root.is_dir():
        start = time.perf_counter()
        synth = synthesize(root, SynthConfig(studies=studies, format="dicom", seed=1, size=512))
        print(f"synthesized {synth.n_images} DICOM images in {time.perf_counter() - start:.1f}s")
    return root


def _load(server, root: Path) -> int:
    start = time.perf_counter()
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix != ".csv"]
    loaded = sum(server.upload(p.read_bytes()) is not None for p in files)
    print(f"loaded {loaded}/{len(files)} files into Orthanc in {time.perf_counter() - start:.1f}s")
    return loaded


def _screen(source, out: Path, bundle: Path, args, options: PacsOptions) -> dict[str, object]:
    cfg = ScreenConfig(
        source=source,
        out=out,
        models=(str(bundle),),
        track=False,
        batch_size=args.batch_size,
        pictures=4,
        pacs=options,
    )
    start = time.perf_counter()
    summary = run_screen(cfg).summary
    seconds = time.perf_counter() - start
    phases = dict(summary.phases)
    phases["listing and checks"] = round(seconds - sum(phases.values()), 2)
    return {
        "seconds": round(seconds, 2),
        "images": summary.counts.images,
        "studies": summary.counts.studies,
        "images_per_s": round(summary.counts.images / seconds, 2),
        "phases": phases,
    }


def _fetch_micro(server, root: Path, options: PacsOptions) -> dict[str, float]:
    """ms per instance, sequential on the driver: disk read, WADO-RS, C-GET, decode."""
    refs = list_archive(root, kind="dicom").refs
    paths = sorted({r.location.path for r in refs})
    start = time.perf_counter()
    data = [Path(p).read_bytes() for p in paths]
    disk = (time.perf_counter() - start) / len(paths)
    start = time.perf_counter()
    for blob in data:
        imaging.decode_bytes(blob, "x.dcm")
    decode = (time.perf_counter() - start) / len(paths)
    out = {"disk_read_ms": disk * 1e3, "decode_ms": decode * 1e3}
    for name, address in (("wado_rs_ms", server.dicomweb), ("c_get_ms", server.dimse)):
        pacs = options.connect(address)
        listing = list_pacs(pacs, options.query)
        locs = list(dict.fromkeys(r.location for r in listing.refs))
        start = time.perf_counter()
        for i in range(0, len(locs), 16):  # as a decode task does: 16 per call
            pacs.fetch(locs[i : i + 16])
        out[name] = (time.perf_counter() - start) / len(locs) * 1e3
    return {k: round(v, 2) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--studies", type=int, default=300)
    p.add_argument("--model", choices=sorted(RECIPES), default="densenet169")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-pacs-"))
    work.mkdir(parents=True, exist_ok=True)
    root = _archive(work, args.studies)
    bundle = _bundle(Path(tempfile.mkdtemp(prefix="bundle-")), args.model, args.size)
    server = start_orthanc(OrthancConfig(storage=Path(tempfile.mkdtemp(prefix="orthanc-"))))
    try:
        _load(server, root)
        options = PacsOptions(auth=PacsAuth(server.cfg.username, server.cfg.password))
        ensure_ray(None)
        runs: dict[str, dict[str, object]] = {}
        out = Path(tempfile.mkdtemp(prefix="reports-"))
        _screen(root, out / "warm-up", bundle, args, options)  # not timed: caches, workers
        for name, source in (
            ("f", root),
            ("w", server.dicomweb),
            ("d", server.dimse),
            ("f2", root),
        ):
            runs[name] = _screen(source, out / name, bundle, args, options)
            print(f"{name}: {json.dumps(runs[name])}", flush=True)
        micro = _fetch_micro(server, root, options)
    finally:
        server.stop()
        ray.shutdown()
    folder = (runs["f"]["images_per_s"] + runs["f2"]["images_per_s"]) / 2
    ratios = {k: round(runs[k]["images_per_s"] / folder, 3) for k in ("w", "d")}
    print(f"per instance, sequential (ms): {json.dumps(micro)}")
    print(
        f"images/s: folder {folder:.1f}, DICOMweb {runs['w']['images_per_s']}, "
        f"DIMSE {runs['d']['images_per_s']}; ratios to the folder: DICOMweb {ratios['w']}, "
        f"DIMSE {ratios['d']} (goal DICOMweb >= 0.8)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "runs": runs,
                    "per_instance_ms": micro,
                    "folder_images_per_s": round(folder, 2),
                    "ratios": ratios,
                },
                indent=2,
            )
        )
    print(f"ratio {ratios['w']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
