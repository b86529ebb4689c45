"""Does it learn on real radiographs? FracAtlas through the whole pipeline, and a reference.

    python bench/real.py [--size 128] [--epochs 12] [--work /tmp/mura-real]
    python bench/real.py --summary        # the committed figures, one `name value` line each

FracAtlas (Abedeen et al., Scientific Data 10, 521 (2023), doi:10.1038/s41597-023-02432-4,
CC BY 4.0): 4,083 real radiographs, 717 fractured, read from ../shared/data/fracatlas. On a
2-core CPU at ≤ 224 px, about an hour at the defaults. The procedure, top to bottom:

1. `mura ingest` (the pipeline's `run_ingest`) at SIZE px into WORK/shards-SIZE, once: the 59
   truncated JPEGs are quarantined; the seeded split, stratified by label and body part
   (seed 0; val 10 %, test 20 %), is written beside the shards (split.csv). Every model
   below is trained, chosen and tested on these same images.
2. Each model in MODELS is trained with `run_training` (Ray Train, SQLite MLflow in WORK,
   registered), from random init — no ImageNet weights here (air-gapped sites): the seed
   CNN, DenseNet-169 under seed-densenet's and mura-paper's recipes (at --densenet-size,
   --densenet-epochs and --densenet-batch: DenseNet-169 is ~6x slower than ResNet-18 on a
   CPU), and `scratch`. Then `scratch` again from a VICReg encoder pretrained by
   `run_pretraining` on the train + val images without their labels (--pretrain-epochs; or
   --encoder, one made before), fine-tuned with the same budget. --merge keeps the rows of
   an earlier run that this one does not measure (each row says its size and epochs).
3. Each registered model predicts val and test through the pipeline (`predict_splits`):
   test AUROC with a 95 % bootstrap CI; Cohen's kappa (CI), sensitivity and specificity at
   the threshold the model carries (chosen on val: `metrics.val_threshold`); seconds and
   training images/s; the per-epoch val AUROC (learning curve). `scratch` is also tested
   with its flip TTA switched off (the same weights).
4. Localization: on the fractured test images with a box, Grad-CAM of each model; the
   pointing game (CAM peak inside a fracture box, Wilson CI) and the CAM energy inside
   (every row again at the end, with today's CAM, rows kept by --merge included).
5. The plain-PyTorch reference (bench/reference_torch.py: a short torchvision script, no
   Ray, no MLflow) trains what `scratch` trains on the same split.csv, as a subprocess.
6. bench/results/real.json, real_roc.png (test ROC curves) and real_learning.png (val AUROC
   per epoch), with the FracAtlas attribution in the pictures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mura_core.checkpoints import read_info, write_info  # noqa: E402
from mura_core.localization import LocalizationScore, load_case, localize_images  # noqa: E402
from mura_core.metrics import bootstrap_auroc_ci  # noqa: E402
from mura_core.recipes import recipe  # noqa: E402
from mura_core.splits import SplitConfig  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "fracatlas"
RESULTS = REPO / "bench" / "results"
ATTRIBUTION = (
    "FracAtlas: Abedeen et al., Sci Data 10, 521 (2023), doi:10.1038/s41597-023-02432-4, CC BY 4.0"
)
SPLIT = SplitConfig(seed=0, val_fraction=0.1, test_fraction=0.2)


@dataclass(frozen=True)
class Entry:
    """One row of the table: a recipe, the flags changed, and whether it starts from the
    pretrained encoder."""

    name: str
    recipe: str
    overrides: dict[str, Any] = field(default_factory=dict)
    pretrained: bool = False


def models(args: argparse.Namespace) -> list[Entry]:
    cnn = {"size": args.size, "epochs": args.epochs}
    dense = {
        "size": args.densenet_size,
        "epochs": args.densenet_epochs,
        "batch_size": args.densenet_batch,
        "weights": "none",
    }
    scratch = {"size": args.size, "epochs": args.epochs}
    return [
        Entry("seed-cnn", "seed-cnn", cnn),
        Entry("seed-densenet", "seed-densenet", dense),
        Entry("mura-paper", "mura-paper", dense),
        Entry("scratch", "scratch", scratch),
        Entry("scratch-pretrained", "scratch", scratch, pretrained=True),
    ]


def ingest_once(work: Path, size: int) -> Path:
    from pipelines.ingest import IngestConfig, run_ingest

    shards = work / f"shards-{size}"
    if not (shards / "manifest.json").is_file():
        run_ingest(IngestConfig(source=DATA, out=shards, size=size, splits=SPLIT))
    return shards


def pretrain(shards: Path, work: Path, args: argparse.Namespace) -> tuple[Path, float]:
    from pipelines.pretrain.run import PretrainConfig, run_pretraining

    started = time.perf_counter()
    result = run_pretraining(
        PretrainConfig(
            shards=shards,
            model="resnet18",
            size=args.size,
            epochs=args.pretrain_epochs,
            tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
            storage=work / "ray_results",
            register="fracatlas-encoder",
        )
    )
    return result.encoder_file, time.perf_counter() - started


def train(entry: Entry, shards: Path, work: Path, weights: Path | None) -> tuple[Any, float]:
    from pipelines.train.config import TrainConfig
    from pipelines.train.run import run_training

    changes = dict(entry.overrides)
    if weights is not None:
        changes["weights"] = str(weights)
    started = time.perf_counter()
    result = run_training(
        TrainConfig(
            shards=shards,
            recipe=recipe(entry.recipe).override(**changes),
            experiment="fracatlas",
            register=f"fracatlas-{entry.name}",
            tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
            storage=work / "ray_results",
        )
    )
    return result, time.perf_counter() - started


def test_figures(bundle: Path, shards: Path, seed: int = 0) -> dict[str, Any]:
    """Test AUROC (CI), kappa (CI), sensitivity, specificity at the model's threshold."""
    from mura_core.metrics import evaluate
    from pipelines.shards.predict import bundle_bytes, predict_splits

    info = read_info(bundle)
    test = predict_splits(shards, ("test",), bundle_bytes(bundle))["test"]
    test = test.where(test.label >= 0)
    evaluation = evaluate(
        test.study_key.tolist(),
        test.prob.tolist(),
        test.label.tolist(),
        test.body_part.tolist(),
        info.threshold,
        seed=seed,
    )
    image = evaluation.image
    low_high = bootstrap_auroc_ci(test.label, test.prob, seed=seed)
    return {
        "auroc": image.auroc,
        "auroc_ci": low_high,
        "kappa": image.kappa,
        "kappa_ci": image.kappa_ci,
        "sensitivity": image.sensitivity,
        "specificity": image.specificity,
        "threshold": info.threshold,
        "n": image.n,
        "positives": image.positives,
        "roc": {"label": test.label.tolist(), "prob": [round(float(p), 5) for p in test.prob]},
    }


def without_tta(bundle: Path, into: Path) -> Path:
    """A copy of the bundle whose model.json says tta: false (the same weights)."""
    import shutil

    shutil.copytree(bundle, into, dirs_exist_ok=True)
    write_info(into, dataclasses.replace(read_info(into), tta=False))
    return into


def pointing(bundle: Path, shards: Path, size: int) -> dict[str, Any]:
    """Pointing game and CAM energy over the fractured test images that have a box."""
    import pyarrow.parquet as pq

    table = pq.read_table(shards / "images", columns=["relpath", "split", "label"]).to_pylist()
    images, masks = [], []
    for row in table:
        name = Path(row["relpath"]).stem
        box_file = DATA / "boxes" / f"{name}.txt"
        if row["split"] == "test" and row["label"] == 1 and box_file.is_file():
            case = load_case(DATA / row["relpath"], box_file, size)
            if case.mask.any():
                images.append(case.image)
                masks.append(case.mask)
    # Zhang et al.'s tolerance, 15 px at 224 px, scaled to SIZE; strict: the peak in a box
    tolerance = 15 * size / 224
    results = localize_images(bundle, np.stack(images), np.stack(masks), tolerance=tolerance)
    strict = [bool(m[r.peak]) for r, m in zip(results, masks, strict=True)]
    energies = [r.energy for r in results]
    return {
        "strict": LocalizationScore.of(strict, energies).to_dict(),
        "tolerant": LocalizationScore.of_images(results, tolerance).to_dict(),
    }


def reference(shards: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    out = work / "reference.json"
    command = [
        sys.executable,
        str(REPO / "bench" / "reference_torch.py"),
        "--split",
        str(shards / "split.csv"),
        "--size",
        str(args.size),
        "--epochs",
        str(args.epochs),
        "--out",
        str(out),
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    figures = json.loads(out.read_text())
    figures["seconds"] = time.perf_counter() - started
    return figures


def row(entry: Entry, result: Any, seconds: float, bundle: Path, shards: Path, size: int) -> dict:
    history = [h.val_study_auroc for h in result.history]
    train_images = int(result.splits["train"].images)
    return {
        "recipe": entry.recipe,
        "overrides": entry.overrides,
        "pretrained": entry.pretrained,
        "seconds": round(seconds, 1),
        "images_per_s": round(train_images * len(history) / seconds, 1),
        "epochs_run": len(history),
        "val_auroc_per_epoch": history,
        "test": test_figures(bundle, shards),
        "version": result.version,  # the pointing game: `repoint`, once every row is in
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from pipelines.registry.model_store import resolve_model
    from pipelines.runtime.cluster import ensure_ray

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    ensure_ray(None)
    shards = ingest_once(work, args.size)
    out: dict[str, Any] = {"models": {}, "size": args.size}
    previous = args.out / "real.json"
    if args.merge and previous.is_file():  # rows measured by an earlier run stay
        kept = json.loads(previous.read_text())
        out["models"], out["runs"] = kept["models"], kept.get("runs", [kept.get("config")])
        out.update({k: kept[k] for k in ("reference", "pretrain_seconds") if k in kept})
    encoder = None
    for entry in models(args):
        if args.only and entry.name not in args.only:
            continue
        if entry.pretrained and encoder is None and args.encoder is not None:
            encoder = args.encoder
        elif entry.pretrained and encoder is None:
            encoder, out["pretrain_seconds"] = pretrain(shards, work, args)
        result, seconds = train(entry, shards, work, encoder if entry.pretrained else None)
        bundle = resolve_model(f"models:/fracatlas-{entry.name}/{result.version}").folder
        out["models"][entry.name] = row(entry, result, seconds, bundle, shards, args.size)
        if entry.pretrained:
            out["models"][entry.name]["encoder"] = str(encoder)
        if entry.name == "scratch":
            plain = without_tta(bundle, work / "scratch-no-tta")
            out["models"]["scratch-no-tta"] = {"test": test_figures(plain, shards)}
        print(json.dumps({entry.name: out["models"][entry.name]["test"]["auroc"]}), flush=True)
        # every row kept as it lands: an hour cut short loses one row, not the table
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "real.partial.json").write_text(json.dumps(out, indent=1) + "\n")
    repoint(out["models"], shards)
    if not args.only or "reference" in args.only:
        out["reference"] = reference(shards, work, args)
    return out


def repoint(rows: dict[str, Any], shards: Path) -> None:
    """Every registered row's pointing game again, with today's CAM (a merged row may have
    been scored by an earlier one): cheap, ~10 s a model."""
    from pipelines.registry.model_store import resolve_model

    for name, figures in rows.items():
        if "version" in figures:
            bundle = resolve_model(f"models:/fracatlas-{name}/{figures['version']}").folder
            figures["pointing"] = pointing(bundle, shards, read_info(bundle).size)


def pictures(figures: dict[str, Any], into: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, (roc_ax, learn_ax) = plt.subplots(1, 2, figsize=(11, 4.8))
    for name, m in figures["models"].items():
        fpr, tpr, _ = roc_curve(m["test"]["roc"]["label"], m["test"]["roc"]["prob"])
        roc_ax.plot(fpr, tpr, label=f"{name} ({m['test']['auroc']:.3f})")
        if "val_auroc_per_epoch" in m:
            learn_ax.plot(
                range(1, len(m["val_auroc_per_epoch"]) + 1),
                m["val_auroc_per_epoch"],
                marker=".",
                label=name,
            )
    if "reference" in figures:
        roc = figures["reference"].get("roc")
        if roc:
            fpr, tpr, _ = roc_curve(roc["label"], roc["prob"])
            auroc = figures["reference"]["tta"]["auroc"]
            roc_ax.plot(fpr, tpr, "k--", label=f"plain PyTorch ({auroc:.3f})")
        ref = figures["reference"]["history"]
        learn_ax.plot(
            [h["epoch"] for h in ref], [h["val_auroc"] for h in ref], "k--", label="plain PyTorch"
        )
    roc_ax.plot([0, 1], [0, 1], ":", color="grey")
    roc_ax.set(xlabel="1 − specificity", ylabel="sensitivity", title="FracAtlas test ROC")
    learn_ax.set(xlabel="epoch", ylabel="val AUROC", title="learning curves")
    for ax in (roc_ax, learn_ax):
        ax.legend(fontsize=7)
    fig.text(0.5, 0.01, ATTRIBUTION, ha="center", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(into / "real_roc.png", dpi=110)
    plt.close(fig)


def summary(path: Path) -> None:
    """One `name value` line per headline figure, from the committed results."""
    figures = json.loads(path.read_text())
    scratch = {
        k: m["test"]["auroc"]
        for k, m in figures["models"].items()
        if k.startswith(("scratch", "seed", "mura"))
    }
    best = max(scratch.values())
    print(f"auroc_scratch_best {best:.4f}")
    if "reference" in figures:
        print(f"auroc_reference {figures['reference']['tta']['auroc']:.4f}")
    efficiency = path.parent / "label_efficiency.json"
    if efficiency.is_file():
        gain = json.loads(efficiency.read_text())["gain"]["0.1"]
        print(f"pretrain_gain_10pct {gain:.4f}")
    points = [
        m["pointing"]["strict"]["pointing"] for m in figures["models"].values() if "pointing" in m
    ]
    print(f"pointing_best {max(points):.4f}")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    p.add_argument("--size", type=int, default=128, help="input size of seed-cnn and scratch")
    p.add_argument("--epochs", type=int, default=12, help="epochs of seed-cnn, scratch, reference")
    p.add_argument("--densenet-size", type=int, default=64)
    p.add_argument("--densenet-epochs", type=int, default=3)
    p.add_argument(
        "--densenet-batch",
        type=int,
        default=32,
        help="DenseNet-169's batch (the papers' 8 is ~3x slower an epoch on a 2-core CPU)",
    )
    p.add_argument("--pretrain-epochs", type=int, default=10)
    p.add_argument(
        "--encoder",
        type=Path,
        default=None,
        help="an encoder's weights file (a pretraining's encoder.pt) instead of pretraining "
        "here: e.g. the one bench/label_efficiency.py made (its JSON says where)",
    )
    p.add_argument("--only", nargs="*", default=None, help="these models only (and 'reference')")
    p.add_argument("--work", type=Path, default=Path("/tmp/mura-real"))
    p.add_argument("--out", type=Path, default=RESULTS, help="where real.json and PNGs go")
    p.add_argument("--summary", action="store_true", help="print the committed figures")
    p.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows of OUT/real.json this run does not measure (each row says its "
        "size and epochs; `runs` lists every run's flags)",
    )
    args = p.parse_args()
    if args.summary:
        summary(args.out / "real.json")
        return
    if not (DATA / "labels.csv").is_file():
        sys.exit(f"bench/real.py: FracAtlas is not at {DATA}")
    started = time.perf_counter()
    figures = run(args)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    figures["config"] = {k: str(v) for k, v in vars(args).items()}
    figures["runs"] = [*figures.get("runs", []), figures["config"]]
    figures["attribution"] = ATTRIBUTION
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "real.json").write_text(json.dumps(figures, indent=1) + "\n")
    pictures(figures, args.out)
    summary(args.out / "real.json")


if __name__ == "__main__":
    main()
