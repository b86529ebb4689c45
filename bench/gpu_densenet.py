"""DenseNet-169 at 320 px, bf16, channels_last: training and inference images/s on one GPU.

    python3 bench/gpu_densenet.py [--size 320] [--out DIR]

Pure PyTorch around the project's own model and presets (`mura_core.models`,
`mura_core.recipes`), so it runs on a GPU machine that has torch and torchvision but no Ray:
 - training: the mura-paper recipe's augmentation on the GPU + forward + backward + Adam,
   per batch size (the recipe's 8, then larger), uint8 batches already on the GPU and, at the
   largest size, copied from pinned host memory each step (what a data loader hands over);
 - inference: the bare-model ceiling on normalized tensors in GPU memory, and with the eval
   preset from uint8 (what screening's predictor does), per batch size.
Prints one line per measurement and writes them to OUT/gpu_densenet.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mura_core.models import build_model  # noqa: E402
from mura_core.recipes import recipe  # noqa: E402


def timed(step: Callable[[], None], device: torch.device, steps: int, warmup: int) -> float:
    """Seconds per step after warm-up (synchronized on CUDA)."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--train-batches", default="8,32,64,128")
    parser.add_argument("--infer-batches", default="64,256,512")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"device {name}, torch {torch.__version__}, size {args.size}")
    results: list[dict] = []
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    preset = recipe("mura-paper").override(size=args.size).train_preset()
    model = build_model("densenet169", size=args.size).to(device)
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)

    for batch in [int(b) for b in args.train_batches.split(",")]:
        images = torch.randint(
            0, 256, (batch, args.size, args.size), dtype=torch.uint8, device=device
        )
        labels = torch.randint(0, 2, (batch,), device=device).float()
        host = images.cpu().pin_memory() if device.type == "cuda" else images

        def train_step(source: torch.Tensor = images, labels: torch.Tensor = labels) -> None:
            x = preset(source.to(device, non_blocking=True), generator)
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(**amp):
                loss = F.binary_cross_entropy_with_logits(model(x).float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        model.train()
        seconds = timed(train_step, device, args.steps, args.warmup)
        results.append(
            {"what": "train", "batch": batch, "images_per_s": batch / seconds, "source": "gpu"}
        )
        print(f"train  batch {batch:4d}: {batch / seconds:8.1f} images/s (uint8 on GPU)")
        if batch == int(args.train_batches.split(",")[-1]) and device.type == "cuda":
            seconds = timed(lambda host=host: train_step(host), device, args.steps, args.warmup)
            results.append(
                {
                    "what": "train",
                    "batch": batch,
                    "images_per_s": batch / seconds,
                    "source": "pinned host",
                }
            )
            print(f"train  batch {batch:4d}: {batch / seconds:8.1f} images/s (from pinned host)")
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated() / 2**30
            print(f"         peak GPU memory {peak:.1f} GiB")

    model.eval()
    evaluate = preset.eval_preset()
    for batch in [int(b) for b in args.infer_batches.split(",")]:
        images = torch.randint(
            0, 256, (batch, args.size, args.size), dtype=torch.uint8, device=device
        )
        ready = evaluate(images).contiguous(memory_format=torch.channels_last)

        def bare(ready: torch.Tensor = ready) -> None:
            with torch.inference_mode(), torch.autocast(**amp):
                model(ready)

        def with_preset(images: torch.Tensor = images) -> None:
            with torch.inference_mode(), torch.autocast(**amp):
                model(evaluate(images).contiguous(memory_format=torch.channels_last))

        for label, fn in (("bare model", bare), ("eval preset + model", with_preset)):
            seconds = timed(fn, device, args.steps, args.warmup)
            results.append(
                {"what": f"infer {label}", "batch": batch, "images_per_s": batch / seconds}
            )
            print(f"infer  batch {batch:4d}: {batch / seconds:8.1f} images/s ({label})")

    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_densenet.json").write_text(
            json.dumps(
                {"device": name, "torch": torch.__version__, "size": args.size, "results": results},
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
