"""Training input pipeline and training throughput: shards + Ray Data vs PNGs + DataLoader.

    .venv/bin/python bench/train.py [--studies 800] [--size 224] [--batches 20] [--archive DIR]

In one process, same images, same size, same augmentation (the seed recipe's, applied to
each batch by the consumer in both cases):
 (1) input pipeline alone — iterate training batches, no model step:
     shards → Ray Data (read_parquet → map_batches → iter_torch_batches), vs
     PNG files → torch DataLoader(num_workers=2) over an ImageFolder-style dataset that
     decodes and resizes each file (what a user would write without shards);
 (2) seed-CNN training images/s fed by each (CPU: the model dominates; on a GPU the input
     pipeline decides).
The last line printed is `ratio <(1) Ray Data / DataLoader>`; goal >= 2.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import ray
import torch
import torch.nn.functional as F
from common import bench_archive
from torch.utils.data import DataLoader, Dataset

from mura_core import imaging
from mura_core.models import build_model
from mura_core.recipes import recipe
from mura_core.shards import read_images
from pipelines.ingest import IngestConfig, run_ingest
from pipelines.runtime.cluster import ensure_ray
from pipelines.shards.shardsets import shard_stats
from pipelines.train.data import train_datasets


class PngFolder(Dataset):
    """ImageFolder-style: (path, label) pairs; each item decoded and resized on access.

    The same images as the shards' training split (paths from its `relpath` column).
    """

    def __init__(self, archive: Path, shards: Path, size: int) -> None:
        rows = read_images(shards, columns=["relpath", "label", "split"]).to_pylist()
        self.items = [
            (str(archive / r["relpath"]), float(r["label"]))
            for r in rows
            if r["split"] == "train" and r["label"] is not None
        ]
        self.size = size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, float]:
        path, label = self.items[i]
        return torch.from_numpy(imaging.load_image(path, size=self.size)), label


def dataloader_epochs(
    archive: Path, shards: Path, size: int, batch: int, epochs: int
) -> Iterator[Iterator[tuple]]:
    """What a user would write: DataLoader, 2 worker processes kept across epochs."""
    loader = DataLoader(
        PngFolder(archive, shards, size),
        batch_size=batch,
        shuffle=True,
        num_workers=2,
        persistent_workers=True,
    )
    for _ in range(epochs):
        yield ((images, labels.float()) for images, labels in loader)


def ray_epochs(
    shards: Path, batch: int, epochs: int, *, ordered: bool = True
) -> Iterator[Iterator[tuple]]:
    """What `mura train` does: the split read through Ray Data once (held in the object
    store when it fits), iterated once per epoch — in a seeded, reproducible order, or
    (`ordered=False`, what it did before) as blocks arrive. The read is timed with epoch 1."""
    ds = None
    for epoch in range(epochs):

        def batches(epoch: int = epoch) -> Iterator[tuple]:
            nonlocal ds
            if ds is None:
                stats = shard_stats(shards)
                ds = train_datasets(shards, stats, None, seed=0, ordered=ordered)["train"]
            for b in ds.iter_torch_batches(
                batch_size=batch, local_shuffle_buffer_size=4 * batch, local_shuffle_seed=epoch
            ):
                yield b["pixels"], b["label"]

        yield batches()


def measure(
    epochs: Iterator[Iterator[tuple]], step, limit: int | None = None
) -> list[tuple[int, float]]:
    """(images, images/s) per epoch; at most `limit` batches per epoch when given."""
    generator = torch.Generator().manual_seed(0)
    out = []
    for batches in epochs:
        n, start = 0, time.perf_counter()
        for i, (images, labels) in enumerate(batches):
            step(images, labels, generator)
            n += len(labels)
            if limit is not None and i + 1 >= limit:
                break
        out.append((n, n / (time.perf_counter() - start)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=800)
    parser.add_argument("--size", type=int, default=224, help="image size (seed recipe: 224)")
    parser.add_argument("--batch-size", type=int, default=64, help="seed recipe: 64")
    parser.add_argument("--epochs", type=int, default=3, help="passes of the input pipeline")
    parser.add_argument("--batches", type=int, default=12, help="timed batches of training")
    parser.add_argument("--archive", type=Path, default=None, help="reuse this archive")
    args = parser.parse_args()
    torch.set_num_threads(2)

    work = Path(tempfile.mkdtemp(prefix="mura-bench-train-"))
    archive = bench_archive(work, args.studies, args.archive)
    ensure_ray()
    shards = work / "shards"
    run_ingest(IngestConfig(source=archive, out=shards, size=args.size))
    preset = recipe("seed-cnn").override(size=args.size).train_preset()
    model = build_model("cnn", size=args.size)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def augment_only(images: torch.Tensor, labels: torch.Tensor, g: torch.Generator) -> None:
        preset(images, g)

    def train_step(images: torch.Tensor, labels: torch.Tensor, g: torch.Generator) -> None:
        loss = F.binary_cross_entropy_with_logits(model(preset(images, g)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    pipelines = {
        "shards + Ray Data": lambda epochs: ray_epochs(shards, args.batch_size, epochs),
        "... unordered": lambda epochs: ray_epochs(shards, args.batch_size, epochs, ordered=False),
        "PNG + DataLoader(2)": lambda epochs: dataloader_epochs(
            archive, shards, args.size, args.batch_size, epochs
        ),
    }
    ray_name, unordered_name, dl_name = list(pipelines)
    print(
        f"(1) input pipeline alone: {args.epochs} epochs, {args.size}px, batch "
        f"{args.batch_size}, seed augmentation"
    )
    first, steady = {}, {}
    for name, make in pipelines.items():
        per_epoch = measure(make(args.epochs), augment_only)
        first[name] = per_epoch[0][1]
        steady[name] = float(np.mean([r for _, r in per_epoch[1:]] or [per_epoch[0][1]]))
        print(
            f"    {name:<20} epoch 1 (start-up, first read): {first[name]:7.1f} images/s;"
            f" epochs 2-{args.epochs}: {steady[name]:7.1f} images/s ({per_epoch[0][0]}"
            " images an epoch)"
        )
    print(f"    epoch-1 ratio {first[ray_name] / first[dl_name]:.2f}")
    print(
        "    cost of the reproducible order (seeded block order, preserve_order): "
        f"{steady[ray_name] / steady[unordered_name]:.2f} of the unordered rate"
    )
    print(f"(2) seed-CNN training, {args.batches} batches of the second epoch")
    train_rates = {}
    for name, make in pipelines.items():
        if name == unordered_name:
            continue
        train_rates[name] = measure(make(2), train_step, args.batches)[1][1]
        print(f"    {name:<20} {train_rates[name]:8.1f} images/s")
    print(
        f"    training ratio {train_rates[ray_name] / train_rates[dl_name]:.2f} "
        "(on this CPU the model step dominates)"
    )
    ray.shutdown()
    ratio = steady[ray_name] / steady[dl_name]
    print(
        f"input-pipeline ratio, epochs after the first (Ray Data / DataLoader): {ratio:.2f}"
        "  (goal >= 2)"
    )
    print(f"ratio {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
