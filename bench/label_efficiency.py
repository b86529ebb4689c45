"""Label efficiency: does self-supervised pretraining help when few images are labelled?

    python bench/label_efficiency.py [--size 128] [--epochs 12] [--seeds 0 1 2]

The user this is for has a PACS of unlabelled radiographs and few radiologist reads. On
FracAtlas (Abedeen et al., Sci Data 10, 521 (2023), CC BY 4.0), top to bottom:

1. The shards and split of bench/real.py (WORK/shards-SIZE, ingested once, split.csv).
2. For each label fraction f (10 %, 25 %, 100 %): a labels CSV in which only f of the
   training images keep their label — chosen per (label, body part) stratum with a seeded
   generator, so each fraction keeps FracAtlas's 17 % fractured — the other training images
   unlabelled (training skips them), val and test labels all kept; ingested with that CSV
   and `--split-file split.csv`, so val and test are the same images as everywhere.
3. One VICReg encoder (`run_pretraining`, --pretrain-epochs) on the train + val images of
   the full shards, labels unused — the same encoder for every fraction (a site pretrains
   on all its studies once).
4. For each fraction and seed: the `scratch` recipe from random init and from the encoder,
   the same fine-tuning budget (--epochs); test AUROC of the registered model through the
   pipeline (`bench/real.py`'s `test_figures`).
5. bench/results/label_efficiency.json: per fraction, per seed, both AUROCs; the mean gain
   (pretrained − scratch) per fraction; and label_efficiency.png (AUROC vs labelled
   fraction, mean ± spread over seeds).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import real  # noqa: E402  (bench/real.py: shared set-up and figures)

FRACTIONS = (0.1, 0.25, 1.0)


def labels_with_fraction(split_csv: Path, fraction: float, into: Path, seed: int = 0) -> Path:
    """FracAtlas's labels.csv with only `fraction` of the training images labelled."""
    with open(split_csv, newline="") as f:
        split_of = {r["path"]: r["split"] for r in csv.DictReader(f)}
    with open(real.DATA / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    strata: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        if split_of.get(r["path"]) == "train":
            strata[(r["label"], r["body_part"])].append(i)
    rng, hidden = np.random.default_rng(seed), set()
    for members in strata.values():
        keep = max(1, round(fraction * len(members)))
        hidden.update(rng.permutation(members)[keep:].tolist())
    for i in hidden:
        rows[i]["label"] = ""
    with open(into, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return into


def shards_for(fraction: float, full: Path, work: Path, size: int) -> Path:
    from mura_core.splits import SplitConfig
    from pipelines.ingest import IngestConfig, run_ingest

    if fraction >= 1.0:
        return full
    out = work / f"shards-{size}-labels{int(fraction * 100)}"
    if not (out / "manifest.json").is_file():
        labels = labels_with_fraction(full / "split.csv", fraction, work / f"labels-{fraction}.csv")
        split = SplitConfig(split_file=str(full / "split.csv"))
        run_ingest(IngestConfig(source=real.DATA, out=out, size=size, labels=labels, splits=split))
    return out


def one_run(shards: Path, work: Path, args: argparse.Namespace, seed: int, encoder: Any) -> float:
    from mura_core.recipes import recipe
    from pipelines.registry.model_store import resolve_model
    from pipelines.train.config import TrainConfig
    from pipelines.train.run import run_training

    name = f"fracatlas-le-{shards.name}-{'pre' if encoder else 'scratch'}-{seed}"
    changes = {"size": args.size, "epochs": args.epochs}
    if encoder is not None:
        changes["weights"] = str(encoder)
    result = run_training(
        TrainConfig(
            shards=shards,
            recipe=recipe("scratch").override(**changes),
            experiment="fracatlas-label-efficiency",
            register=name,
            tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
            storage=work / "ray_results",
            seed=seed,
            cam_examples=0,
        )
    )
    bundle = resolve_model(f"models:/{name}/{result.version}").folder
    return float(real.test_figures(bundle, shards)["auroc"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    from pipelines.runtime.cluster import ensure_ray

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    ensure_ray(None)
    full = real.ingest_once(work, args.size)
    encoder, pretrain_seconds = real.pretrain(full, work, args)
    out: dict[str, Any] = {
        "fractions": {},
        "pretrain_seconds": round(pretrain_seconds, 1),
        "encoder": str(encoder),
    }
    for fraction in args.fractions:
        shards = shards_for(fraction, full, work, args.size)
        runs = {"scratch": [], "pretrained": []}
        for seed in args.seeds:
            runs["scratch"].append(one_run(shards, work, args, seed, None))
            runs["pretrained"].append(one_run(shards, work, args, seed, encoder))
            print(json.dumps({str(fraction): runs}), flush=True)
        out["fractions"][str(fraction)] = runs
    out["gain"] = {
        f: float(np.mean(r["pretrained"]) - np.mean(r["scratch"]))
        for f, r in out["fractions"].items()
    }
    return out


def picture(figures: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    fractions = sorted(figures["fractions"], key=float)
    x = [100 * float(f) for f in fractions]
    for name, style in (("scratch", "o-"), ("pretrained", "s-")):
        values = [figures["fractions"][f][name] for f in fractions]
        mean = [float(np.mean(v)) for v in values]
        ax.errorbar(
            x,
            mean,
            yerr=[float(np.std(v)) for v in values],
            fmt=style,
            capsize=3,
            label="from scratch" if name == "scratch" else "VICReg-pretrained",
        )
    ax.set(
        xscale="log",
        xlabel="training images labelled (%)",
        ylabel="test AUROC",
        title="FracAtlas: label efficiency",
    )
    ax.set_xticks(x, [f"{v:g}" for v in x])
    ax.legend()
    fig.text(0.5, 0.01, real.ATTRIBUTION, ha="center", fontsize=6)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=12, help="fine-tuning epochs (every run)")
    p.add_argument("--pretrain-epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS))
    p.add_argument("--work", type=Path, default=Path("/tmp/mura-real"))
    p.add_argument("--out", type=Path, default=real.RESULTS)
    args = p.parse_args()
    started = time.perf_counter()
    figures = run(args)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    figures["config"] = {k: str(v) for k, v in vars(args).items()}
    figures["attribution"] = real.ATTRIBUTION
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "label_efficiency.json").write_text(json.dumps(figures, indent=1) + "\n")
    picture(figures, args.out / "label_efficiency.png")
    print(json.dumps(figures["gain"]))


if __name__ == "__main__":
    main()
