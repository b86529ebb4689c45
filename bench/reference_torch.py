"""What a user would write instead of the pipeline: plain PyTorch + torchvision on FracAtlas.

    python bench/reference_torch.py --split SHARDS/split.csv [--size 128] [--epochs 12]

No Ray, no MLflow, no project code: a short torchvision script, so that the pipeline's
accuracy (test AUROC within this script's 95 % CI) and its cost (time ratio) are measured
against it. It trains what the `scratch` recipe trains, as a user would write it:

1. The same images and split: `labels.csv` of the FracAtlas folder and the `split.csv` that
   `mura ingest` wrote beside its shards (path,split). Each file is opened with PIL,
   greyscale, its longer side scaled to SIZE and padded black to a square (`ImageOps.pad`,
   the same geometry as the pipeline); files PIL cannot read whole (FracAtlas ships 59
   truncated JPEGs) are skipped. All images are decoded once into memory (timed apart).
2. The same model and training: torchvision's ResNet-18 with a one-channel first
   convolution and one output; AdamW (lr, weight decay 0.05 on every parameter, as a user
   would), one epoch of linear warm-up then cosine (`SequentialLR`), BCE with `pos_weight`
   = normal / abnormal training images, torchvision v2 augmentation (RandomResizedCrop
   area 0.6–1, rotation ±15°, horizontal flip, contrast ±0.2, gamma), weight EMA 0.99 with
   `torch.optim.swa_utils.AveragedModel`, flip TTA at test time.
3. After every epoch the EMA model's val AUROC; the best epoch's EMA weights are tested:
   AUROC (scikit-learn) with a 95 % bootstrap CI (2,000 resamples), seconds, images/s.
   One JSON (`--out`).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image, ImageOps
from sklearn.metrics import roc_auc_score
from torchvision.transforms import v2

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fracatlas"


def load_split(
    data: Path, split_csv: Path, size: int
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{split: (uint8 images (N, 1, S, S), float labels (N,))}, unreadable files skipped."""
    with open(data / "labels.csv", newline="") as f:
        labels = {row["path"]: float(row["label"]) for row in csv.DictReader(f)}
    with open(split_csv, newline="") as f:
        split_of = {row["path"]: row["split"] for row in csv.DictReader(f)}
    out: dict[str, tuple[list, list]] = {"train": ([], []), "val": ([], []), "test": ([], [])}
    for path, split in sorted(split_of.items()):
        try:
            with Image.open(data / path) as image:
                image = ImageOps.pad(image.convert("L"), (size, size), color=0)
        except OSError:
            continue  # truncated or unreadable
        out[split][0].append(torch.from_numpy(np.asarray(image).copy()))
        out[split][1].append(labels[path])
    return {k: (torch.stack(x).unsqueeze(1), torch.tensor(y)) for k, (x, y) in out.items()}


def make_model() -> torch.nn.Module:
    model = torchvision.models.resnet18(num_classes=1)
    model.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def augment(size: int) -> v2.Compose:
    def gamma(x: torch.Tensor) -> torch.Tensor:
        return v2.functional.adjust_gamma(x, float(np.exp(np.random.uniform(-0.26, 0.26))))

    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(0.6, 1.0), antialias=True),
            v2.RandomRotation(15),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(contrast=0.2),
            v2.Lambda(gamma),
        ]
    )


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, tta: bool) -> np.ndarray:
    model.eval()
    probs = []
    for batch in x.split(128):
        batch = batch.float() / 255.0
        p = torch.sigmoid(model(batch).squeeze(1))
        if tta:
            p = (p + torch.sigmoid(model(batch.flip(-1)).squeeze(1))) / 2
        probs.append(p)
    return torch.cat(probs).numpy()


def bootstrap_ci(y: np.ndarray, p: np.ndarray, seed: int = 0) -> tuple[float, float]:
    rng, scores = np.random.default_rng(seed), []
    for _ in range(2000):
        i = rng.integers(0, len(y), len(y))
        if y[i].min() != y[i].max():
            scores.append(roc_auc_score(y[i], p[i]))
    return float(np.percentile(scores, 2.5)), float(np.percentile(scores, 97.5))


def train(data: dict, args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    x, y = data["train"]
    model, transform = make_model(), augment(args.size)
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.99), use_buffers=True
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    steps = math.ceil(len(x) / args.batch_size)
    scheduler = torch.optim.lr_scheduler.SequentialLR(
        optimizer,
        [
            torch.optim.lr_scheduler.LinearLR(optimizer, 0.01, 1.0, total_iters=steps),
            torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, max(1, steps * (args.epochs - 1))
            ),
        ],
        milestones=[steps],
    )
    pos_weight = (y == 0).sum() / (y == 1).sum()
    best, history, started = (-1.0, None, 0), [], time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        for idx in torch.randperm(len(x)).split(args.batch_size):
            batch = torch.stack([transform(img) for img in x[idx]]).float() / 255.0
            loss = F.binary_cross_entropy_with_logits(
                model(batch).squeeze(1), y[idx], pos_weight=pos_weight
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            ema.update_parameters(model)
        val_auroc = roc_auc_score(data["val"][1].numpy(), predict(ema, data["val"][0], False))
        history.append({"epoch": epoch, "val_auroc": float(val_auroc)})
        print(f"epoch {epoch}/{args.epochs}  val AUROC {val_auroc:.3f}", flush=True)
        if val_auroc > best[0]:
            best = (val_auroc, copy.deepcopy(ema.module.state_dict()), epoch)
    seconds = time.perf_counter() - started
    model.load_state_dict(best[1])
    yt, xt = data["test"][1].numpy(), data["test"][0]
    out = {"history": history, "best_epoch": best[2], "train_seconds": round(seconds, 1)}
    out["images_per_s"] = round(len(x) * args.epochs / seconds, 1)
    for tta in (False, True):
        p = predict(model, xt, tta)
        low, high = bootstrap_ci(yt, p)
        key = "tta" if tta else "plain"
        out[key] = {"auroc": float(roc_auc_score(yt, p)), "ci": [low, high]}
    out["roc"] = {"label": yt.astype(int).tolist(), "prob": [round(float(v), 5) for v in p]}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--split", type=Path, required=True, help="split.csv written by mura ingest")
    p.add_argument("--data", type=Path, default=DATA, help=f"FracAtlas folder (default {DATA})")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data = load_split(args.data, args.split, args.size)
    decode = time.perf_counter() - started
    print({k: len(v[1]) for k, v in data.items()}, f"decoded in {decode:.0f}s", flush=True)
    result = {"config": {k: str(v) for k, v in vars(args).items()}, "decode_seconds": decode}
    result |= train(data, args)
    print(json.dumps({k: result[k] for k in ("plain", "tta", "train_seconds")}))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
