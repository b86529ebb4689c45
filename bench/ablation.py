"""Which ingredients make a from-scratch radiograph classifier learn? An ablation on FracAtlas.

Pure PyTorch on the CPU (no Ray, no MLflow), built from the project's own pieces, never
re-implemented here: the plain-folder source and the split (`mura_core.archive.folder`,
`mura_core.splits.assign_splits`), the decoder (`mura_core.imaging.load_image`), the presets
(`mura_core.transforms.TrainPreset`), the models with a one-channel stem and `FlipTTA`
(`mura_core.models`), weight EMA (`mura_core.ema`), AdamW + warm-up + cosine
(`mura_core.schedules`). The procedure, top to bottom:

1. List FracAtlas (`labels.csv`: path, label, body part, view; every image its own study)
   and split it with `assign_splits(refs, SplitConfig(seed=0, val_fraction=0.1,
   test_fraction=0.2))`, recomputed on every call (the split is the project's, whatever it is
   today; the cache below is keyed by path, not by split).
2. Decode every image once at the run's size (`load_image(path, size=S)`: aspect kept, padded
   black to S×S) into a uint8 cache, /tmp/fracatlas_cache/S.npy + S.json (paths, labels);
   the 59 truncated JPEGs raise the project's ImagingError and are skipped (counted).
3. Per configuration (`Config`, one frozen record; `CONFIGS` names the ablation's runs), with
   torch.set_num_threads(THREADS) and every random draw from the run's seed: build the model
   (seeded), the optimizer (AdamW with decay on weights only, or plain Adam) and the schedule
   (per-step warm-up + cosine, or a constant lr); each epoch shuffles the training images
   (or draws them class-balanced with replacement: `imbalance="sampler"`), augments each
   batch with the preset (a local torch.Generator), minimizes BCE (class-weighted
   w+ = N/(A+N), w− = A/(A+N) as the MURA paper, when `imbalance="weighted"`), and updates
   the weight EMA after every step.
4. After every epoch: val AUROC and loss of the raw weights and of the EMA weights; each
   keeps its own best epoch (by val AUROC) in memory. `patience` stops early when neither
   improved for that many epochs.
5. Test: the best-epoch weights of each of raw and EMA, each with and without flip TTA — EMA
   does not change training and TTA is evaluation only, so "no EMA" and "no TTA" are measured
   on the same run for free. AUROC (sklearn) with a 95 % percentile bootstrap CI (2,000
   resamples of the test images, np.random.default_rng(seed)). The configuration's
   headline is the variant its `ema` / `tta` flags name.
6. JSON per run: bench/results/ablation/NAME.json (config, split and cache counts, per-epoch
   history, best epochs, the four test variants, seconds per epoch and in all).

    nice -n 19 .venv/bin/python bench/ablation.py --list
    nice -n 19 .venv/bin/python bench/ablation.py baseline no-aug --epochs 12
    nice -n 19 .venv/bin/python bench/ablation.py --time-epoch --sizes 96,112,128

FracAtlas: Abedeen I. et al., "FracAtlas: A Dataset for Fracture Classification,
Localization and Segmentation of Musculoskeletal Radiographs", Scientific Data 10, 521 (2023),
doi:10.1038/s41597-023-02432-4, CC BY 4.0 (images read from /work/shared, never copied here).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# OpenMP threads that spin while waiting burn a shared CPU (measured: 3× the CPU time per
# image with 2 threads beside other work); read by OpenMP when torch starts, so set first
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from torch import nn  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ablation_table import write_table  # noqa: E402

from mura_core.archive import ArchiveFiles  # noqa: E402
from mura_core.archive.folder import list_folder  # noqa: E402
from mura_core.ema import ModelEMA  # noqa: E402
from mura_core.imaging import ImagingError, load_image  # noqa: E402
from mura_core.models import FlipTTA, build_model  # noqa: E402
from mura_core.recipes import recipe  # noqa: E402
from mura_core.schedules import adamw, warmup_cosine  # noqa: E402
from mura_core.splits import SplitConfig, assign_splits  # noqa: E402
from mura_core.transforms import TrainPreset  # noqa: E402

DATA = Path("/work/shared/data/fracatlas")
CACHE = Path("/tmp/fracatlas_cache")
OUT = REPO / "bench" / "results" / "ablation"
SPLIT = SplitConfig(seed=0, val_fraction=0.1, test_fraction=0.2)
THREADS = 2  # --threads; two 1-thread runs side by side use 2 cores best on a busy machine
BOOTSTRAP = 2000
EVAL_BATCH = 128


@dataclass(frozen=True, kw_only=True)
class Config:
    """One training configuration of the ablation (every field is logged in its JSON)."""

    name: str
    model: str = "resnet18"
    in_channels: int = 1
    size: int = 80
    epochs: int = 8
    batch_size: int = 32
    optimizer: str = "adamw"  # "adamw" (decay on weights only) or "adam" (no decay)
    lr: float = 1e-3
    weight_decay: float = 0.05
    schedule: str = "warmup_cosine"  # or "constant"
    warmup_epochs: float = 1.0
    imbalance: str = "weighted"  # "none", "weighted" (w+/w− BCE) or "sampler" (balanced)
    crop_scale: tuple[float, float] | None = (0.6, 1.0)
    rotation_deg: float = 15.0
    hflip: bool = True
    vflip: bool = False
    gamma: float = 0.3
    contrast: float = 0.2
    ema_decay: float = 0.99
    ema: bool = True  # headline variant: EMA weights ...
    tta: bool = True  # ... with flip TTA
    patience: int | None = None
    seed: int = 0

    def preset(self) -> TrainPreset:
        """The augmentation, as the `scratch` recipe with this run's settings makes it (one
        mapping from recipe fields to a preset: `Recipe.train_preset`)."""
        changed = dataclasses.replace(  # not `override`: crop_scale=None means "no crop"
            recipe("scratch"),
            size=self.size,
            rotation_deg=self.rotation_deg,
            hflip=self.hflip,
            vflip=self.vflip,
            crop_scale=self.crop_scale,
            gamma=self.gamma,
            contrast=self.contrast,
            in_channels=self.in_channels,
        )
        return changed.train_preset()

    @property
    def variant(self) -> str:
        return ("ema" if self.ema else "raw") + ("+tta" if self.tta else "")


BASE = Config(name="baseline")
_NO_AUG = dict(crop_scale=None, rotation_deg=0.0, hflip=False, gamma=0.0, contrast=0.0)
CONFIGS: dict[str, Config] = {
    c.name: c
    for c in (
        BASE,
        dataclasses.replace(
            BASE,
            name="adam-constant",
            optimizer="adam",
            schedule="constant",
            lr=1e-4,
        ),
        dataclasses.replace(BASE, name="adamw-constant", schedule="constant"),
        dataclasses.replace(BASE, name="imbalance-none", imbalance="none"),
        dataclasses.replace(BASE, name="imbalance-sampler", imbalance="sampler"),
        dataclasses.replace(BASE, name="no-aug", **_NO_AUG),
        dataclasses.replace(BASE, name="no-intensity", gamma=0.0, contrast=0.0),
        dataclasses.replace(BASE, name="no-crop", crop_scale=None),
        dataclasses.replace(BASE, name="three-channel", in_channels=3),
        dataclasses.replace(BASE, name="resnet34", model="resnet34"),
        dataclasses.replace(BASE, name="densenet121", model="densenet121"),
        dataclasses.replace(BASE, name="efficientnet_b0", model="efficientnet_b0"),
        dataclasses.replace(BASE, name="size64", size=64),
        dataclasses.replace(BASE, name="size96", size=96),
        dataclasses.replace(BASE, name="size128", size=128),
    )
}


# what each run switches off (ingredient, baseline's setting, this run's); "no EMA" and
# "no TTA" are not runs: every run's JSON holds them (its `variants`)
ABLATIONS: dict[str, tuple[str, str, str]] = {
    "adam-constant": (
        "optimizer + schedule",
        "AdamW 1e-3, warm-up + cosine",
        "Adam 1e-4, no decay, constant",
    ),
    "adamw-constant": ("schedule", "warm-up + cosine", "constant lr"),
    "imbalance-none": ("class imbalance", "weighted BCE (w+/w−)", "plain BCE"),
    "imbalance-sampler": ("class imbalance", "weighted BCE (w+/w−)", "balanced sampler"),
    "no-aug": ("augmentation", "crop+rot+flip+gamma+contrast", "none"),
    "no-intensity": ("intensity augmentation", "gamma 0.3, contrast 0.2", "off"),
    "no-crop": ("random resized crop", "scale 0.6-1.0", "off"),
    "three-channel": ("stem", "1 channel", "3 channels (gray replicated)"),
    "resnet34": ("architecture", "resnet18", "resnet34"),
    "densenet121": ("architecture", "resnet18", "densenet121"),
    "efficientnet_b0": ("architecture", "resnet18", "efficientnet_b0"),
    "size64": ("resolution", "80 px", "64 px"),
    "size96": ("resolution", "80 px", "96 px"),
    "size128": ("resolution", "80 px", "128 px"),
}


# ---- 1-2: split and decode cache ------------------------------------------------------------


@dataclass(frozen=True)
class Data:
    """The decoded images (uint8 N×S×S), labels, and the index of each split."""

    images: torch.Tensor
    labels: np.ndarray
    index: dict[str, np.ndarray]
    skipped: int


def _cache(size: int) -> tuple[np.ndarray, list[str], list[int], int]:
    """(images, relpaths, labels, skipped) decoded at `size`, from /tmp or decoded now."""
    npy, meta = CACHE / f"{size}.npy", CACHE / f"{size}.json"
    if npy.is_file() and meta.is_file():
        info = json.loads(meta.read_text())
        return np.load(npy), info["relpaths"], info["labels"], info["skipped"]
    listing = list_folder(ArchiveFiles.at(DATA))
    images, relpaths, labels, skipped = [], [], [], 0
    started = time.perf_counter()
    for ref in listing.refs:
        try:
            images.append(load_image(ref.location.path, size=size))
        except ImagingError:  # the release's truncated JPEGs
            skipped += 1
            continue
        relpaths.append(ref.relpath)
        labels.append(int(ref.label))
    print(
        f"decoded {len(images)} images at {size}px, skipped {skipped} "
        f"({time.perf_counter() - started:.0f} s)",
        flush=True,
    )
    CACHE.mkdir(parents=True, exist_ok=True)
    array = np.stack(images)
    np.save(npy, array)
    meta.write_text(json.dumps({"relpaths": relpaths, "labels": labels, "skipped": skipped}))
    return array, relpaths, labels, skipped


def load_data(size: int) -> Data:
    """The cache at `size` and today's project split of it."""
    array, relpaths, labels, skipped = _cache(size)
    listing = list_folder(ArchiveFiles.at(DATA))
    splits_of = assign_splits(listing.refs, SPLIT)
    split_of = dict(zip((r.relpath for r in listing.refs), splits_of, strict=True))
    splits = np.array([split_of[p] for p in relpaths])
    index = {name: np.flatnonzero(splits == name) for name in ("train", "val", "test")}
    return Data(torch.from_numpy(array), np.array(labels, dtype=np.int64), index, skipped)


# ---- 3: training ----------------------------------------------------------------------------


def _class_weights(labels: np.ndarray) -> tuple[float, float]:
    """The MURA paper's (w+, w−) = (N / (A + N), A / (A + N)) over the training images."""
    positives, total = float(labels.sum()), float(len(labels))
    return (total - positives) / total, positives / total


def _epoch_order(cfg: Config, labels: np.ndarray, generator: torch.Generator) -> torch.Tensor:
    """Positions in the training split for one epoch: a permutation, or (sampler) as many
    draws with replacement, each class drawn with probability 1/2."""
    n = len(labels)
    if cfg.imbalance != "sampler":
        return torch.randperm(n, generator=generator)
    counts = np.bincount(labels, minlength=2).astype(np.float64)
    weights = torch.from_numpy(1.0 / counts[labels])
    return torch.multinomial(weights, n, replacement=True, generator=generator)


def _loss(logits: torch.Tensor, y: torch.Tensor, weights: tuple[float, float] | None) -> Any:
    if weights is None:
        return F.binary_cross_entropy_with_logits(logits, y)
    sample = torch.where(y > 0.5, weights[0], weights[1])
    return F.binary_cross_entropy_with_logits(logits, y, weight=sample)


def _optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return adamw(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, cfg: Config) -> np.ndarray:
    """Probabilities of uint8 images through the eval preset."""
    model.eval()
    preset = cfg.preset().eval_preset()
    out = [
        torch.sigmoid(model(preset(images[i : i + EVAL_BATCH])).float())
        for i in range(0, len(images), EVAL_BATCH)
    ]
    return torch.cat(out).numpy()


def _val_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    loss = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    return {"auroc": float(roc_auc_score(labels, probs)), "loss": float(loss)}


def bootstrap_auroc(
    labels: np.ndarray, probs: np.ndarray, seed: int = 0, n: int = BOOTSTRAP
) -> tuple[float, float, float]:
    """AUROC and its 95 % percentile bootstrap interval (resampled images)."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        pick = rng.integers(0, len(labels), len(labels))
        if labels[pick].min() != labels[pick].max():
            values.append(roc_auc_score(labels[pick], probs[pick]))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(roc_auc_score(labels, probs)), float(low), float(high)


@dataclass
class Trainer:
    """One configuration's model and what steps with it (optimizer, schedule, EMA)."""

    cfg: Config
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: ModelEMA
    weights: tuple[float, float] | None
    generator: torch.Generator

    @classmethod
    def start(cls, cfg: Config, train_y: np.ndarray) -> Trainer:
        torch.set_num_threads(THREADS)
        torch.set_flush_denormal(True)  # denormal floats slow CPU convolutions many times over
        torch.manual_seed(cfg.seed)  # model init, dropout / stochastic depth
        model = build_model(cfg.model, size=cfg.size, in_channels=cfg.in_channels)
        optimizer = _optimizer(cfg, model)
        steps = math.ceil(len(train_y) / cfg.batch_size)
        scheduler = (
            warmup_cosine(
                optimizer, epochs=cfg.epochs, steps_per_epoch=steps, warmup_epochs=cfg.warmup_epochs
            )
            if cfg.schedule == "warmup_cosine"
            else None
        )
        weights = _class_weights(train_y) if cfg.imbalance == "weighted" else None
        generator = torch.Generator().manual_seed(cfg.seed)
        return cls(
            cfg,
            model,
            optimizer,
            scheduler,
            ModelEMA(model, decay=cfg.ema_decay),
            weights,
            generator,
        )

    def one_epoch(self, train_x: torch.Tensor, train_y: np.ndarray) -> tuple[float, int]:
        """One pass in this epoch's order: (summed loss, images seen)."""
        cfg, started = self.cfg, time.perf_counter()
        preset, labels = cfg.preset(), torch.from_numpy(train_y).float()
        self.model.train()
        order = _epoch_order(cfg, train_y, self.generator)
        loss_sum, seen = 0.0, 0
        for i in range(0, len(order), cfg.batch_size):
            pick = order[i : i + cfg.batch_size]
            if len(pick) < 2:  # BatchNorm needs two images
                continue
            loss = _loss(
                self.model(preset(train_x[pick], self.generator)).float(),
                labels[pick],
                self.weights,
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            self.ema.update(self.model)
            loss_sum += float(loss.detach()) * len(pick)
            seen += len(pick)
            if (i // cfg.batch_size) % 30 == 29:
                print(f"    {seen} images, {time.perf_counter() - started:.0f} s", flush=True)
        return loss_sum, seen


Best = dict[str, tuple[float, int, dict[str, torch.Tensor]]]  # variant: (val AUROC, epoch, state)


def _validate(
    trainer: Trainer, val: tuple[torch.Tensor, np.ndarray], row: dict, best: Best, epoch: int
) -> None:
    """The raw and EMA weights on val, into `row`; each variant's best state kept in `best`."""
    for variant, net in (("raw", trainer.model), ("ema", trainer.ema.module)):
        metrics = _val_metrics(predict(net, val[0], trainer.cfg), val[1])
        row[f"val_auroc_{variant}"] = metrics["auroc"]
        row[f"val_loss_{variant}"] = metrics["loss"]
        if variant not in best or metrics["auroc"] > best[variant][0]:
            state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            best[variant] = (metrics["auroc"], epoch, state)


def _test(trainer: Trainer, best: Best, data: Data) -> dict[str, dict[str, Any]]:
    """Each variant's best weights, with and without flip TTA, on test (bootstrap CI)."""
    cfg = trainer.cfg
    test_x, test_y = data.images[data.index["test"]], data.labels[data.index["test"]]
    val_x, val_y = data.images[data.index["val"]], data.labels[data.index["val"]]
    results: dict[str, Any] = {}
    for variant, (val_auc, epoch, state) in best.items():
        net = copy.deepcopy(trainer.model)
        net.load_state_dict(state)
        for tta in (False, True):
            evaluated = FlipTTA(net) if tta else net
            auc, low, high = bootstrap_auroc(test_y, predict(evaluated, test_x, cfg), cfg.seed)
            results[variant + ("+tta" if tta else "")] = {
                "best_epoch": epoch,
                "val_auroc": val_auc,
                "val_auroc_this": _val_metrics(predict(evaluated, val_x, cfg), val_y)["auroc"],
                "test_auroc": auc,
                "test_ci95": [low, high],
            }
    return results


def train(cfg: Config, data: Data) -> dict[str, Any]:
    """Train one configuration; the JSON record of steps 3-5."""
    train_idx = data.index["train"]
    train_x, train_y = data.images[train_idx], data.labels[train_idx]
    val = (data.images[data.index["val"]], data.labels[data.index["val"]])
    trainer = Trainer.start(cfg, train_y)
    history: list[dict[str, float]] = []
    best: Best = {}
    started = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        epoch_start = time.perf_counter()
        loss_sum, seen = trainer.one_epoch(train_x, train_y)
        row: dict[str, float] = {
            "epoch": epoch,
            "lr": trainer.optimizer.param_groups[0]["lr"],
            "train_loss": loss_sum / max(seen, 1),
            "train_seconds": time.perf_counter() - epoch_start,
        }
        _validate(trainer, val, row, best, epoch)
        row["epoch_seconds"] = time.perf_counter() - epoch_start
        history.append(row)
        print(
            f"  {cfg.name} epoch {epoch:2d}/{cfg.epochs}: loss {row['train_loss']:.4f} "
            f"val AUROC raw {row['val_auroc_raw']:.3f} ema {row['val_auroc_ema']:.3f} "
            f"({row['epoch_seconds']:.0f} s)",
            flush=True,
        )
        stale = min(epoch - best[v][1] for v in best)
        if cfg.patience is not None and stale >= cfg.patience:
            break
    results = _test(trainer, best, data)
    return {
        "config": dataclasses.asdict(cfg),
        "headline": cfg.variant,
        "test_auroc": results[cfg.variant]["test_auroc"],
        "test_ci95": results[cfg.variant]["test_ci95"],
        "val_auroc": results[cfg.variant]["val_auroc_this"],
        "variants": results,
        "history": history,
        "counts": {
            **{f"{k}_images": len(v) for k, v in data.index.items()},
            **{f"{k}_fractured": int(data.labels[v].sum()) for k, v in data.index.items()},
            "skipped_undecodable": data.skipped,
        },
        "seconds": time.perf_counter() - started,
        "seconds_per_epoch": float(np.mean([h["epoch_seconds"] for h in history])),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "split": dataclasses.asdict(SPLIT),
    }


def time_epoch(cfg: Config, data: Data, batches: int = 6) -> float:
    """Seconds of one training epoch, extrapolated from `batches` timed batches."""
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    model = build_model(cfg.model, size=cfg.size, in_channels=cfg.in_channels).train()
    optimizer, preset = _optimizer(cfg, model), cfg.preset()
    generator = torch.Generator().manual_seed(0)
    x_all = data.images[data.index["train"]]
    y = torch.zeros(cfg.batch_size)

    def step() -> None:
        pick = torch.randint(0, len(x_all), (cfg.batch_size,), generator=generator)
        loss = F.binary_cross_entropy_with_logits(model(preset(x_all[pick], generator)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()
    started = time.perf_counter()
    for _ in range(batches):
        step()
    per_batch = (time.perf_counter() - started) / batches
    return per_batch * math.ceil(len(x_all) / cfg.batch_size)


def main() -> int:
    parser = argparse.ArgumentParser(
        description="FracAtlas from-scratch ablation (pure PyTorch, CPU): trains the named "
        "configurations, writes bench/results/ablation/NAME.json each. See the module doc.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="configurations: " + ", ".join(CONFIGS),
    )
    parser.add_argument("names", nargs="*", help="configurations to train (see --list)")
    parser.add_argument("--list", action="store_true", help="print the configurations")
    parser.add_argument("--epochs", type=int, help="override every configuration's epochs")
    parser.add_argument("--size", type=int, help="override every configuration's size")
    parser.add_argument("--seed", type=int, help="override the seed (suffix -sN on the name)")
    parser.add_argument(
        "--time-epoch",
        action="store_true",
        help="only time one epoch per model and size (--sizes, --models)",
    )
    parser.add_argument("--sizes", default="96,112,128,160")
    parser.add_argument("--models", default="resnet18")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--threads", type=int, default=THREADS, help="torch threads per run")
    parser.add_argument("--table", action="store_true", help="only write OUT/README.md")
    args = parser.parse_args()
    globals()["THREADS"] = args.threads
    if args.table:
        print(write_table(args.out, ABLATIONS, CONFIGS))
        return 0
    if args.list:
        for cfg in CONFIGS.values():
            changed = {
                f.name: getattr(cfg, f.name)
                for f in dataclasses.fields(cfg)
                if f.name != "name" and getattr(cfg, f.name) != getattr(BASE, f.name)
            }
            print(f"{cfg.name:18s} {changed or dataclasses.asdict(cfg)}")
        return 0
    if args.time_epoch:
        for size in [int(s) for s in args.sizes.split(",")]:
            data = load_data(size)
            for model in args.models.split(","):
                cfg = dataclasses.replace(BASE, model=model, size=size)
                print(
                    f"{model} {size}px: {time_epoch(cfg, data):.0f} s/epoch "
                    f"(batch {cfg.batch_size}, {THREADS} threads)",
                    flush=True,
                )
        return 0
    unknown = [n for n in args.names if n not in CONFIGS]
    if unknown or not args.names:
        parser.error(f"name configurations from: {', '.join(CONFIGS)} (unknown: {unknown})")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names:
        cfg = CONFIGS[name]
        changes: dict[str, Any] = {}
        if args.epochs:
            changes["epochs"] = args.epochs
        if args.size:
            changes["size"] = args.size
        if args.seed is not None:
            changes.update(seed=args.seed, name=f"{name}-s{args.seed}")
        cfg = dataclasses.replace(cfg, **changes)
        print(f"{cfg.name}: {cfg}", flush=True)
        record = train(cfg, load_data(cfg.size))
        (args.out / f"{cfg.name}.json").write_text(json.dumps(record, indent=1))
        ci = record["test_ci95"]
        print(
            f"{cfg.name}: test AUROC {record['test_auroc']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] "
            f"({record['headline']}), {record['seconds']:.0f} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
