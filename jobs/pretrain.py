"""`mura pretrain` / `python -m jobs.pretrain`: parse flags, call pipelines.pretrain, print."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from jobs.common import add_run_arguments, add_worker_arguments, job_main, wrapped_help
from mura_core.archive import PacsSource, parse_source
from pipelines.pretrain.run import PretrainConfig, PretrainError, run_pretraining
from pipelines.runtime.console import console

DESCRIPTION = (
    "Self-supervised pretraining for a site with many unlabeled radiographs and few labels. "
    "Trains an encoder (a torchvision backbone, one-channel stem) on the images of SHARDS "
    "(from `mura ingest`; labels, where there are any, are never read) with VICReg "
    "(Bardes, Ponce & LeCun, ICLR 2022) on Ray Train: two augmented views of each image "
    "(random resized crop, small rotation, flip, gamma, contrast) are pulled together while "
    "every embedding dimension keeps its spread and the dimensions decorrelate. No negatives "
    "and no momentum encoder: it works with the batch one CPU or one GPU holds and scales to "
    "more workers (embeddings gathered across them). Uses the train and val splits, never "
    "test: a classifier started from the encoder is still graded on unseen patients. Every "
    "epoch reports the loss and its terms and saves a checkpoint (the same --name resumes); "
    "the run goes to MLflow and the encoder is registered (model.json says kind: encoder). "
    "Then start any recipe from it: `mura train SHARDS --recipe R --model M --weights "
    "models:/mura-encoder-M/VERSION` (or the printed encoder.pt as --weights FILE). "
    "Tracking URI: MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db."
)
EPILOG = """examples:
  mura ingest pacs-export/ --out shards/
  mura pretrain shards/ --model resnet18 --size 224 --epochs 100 --batch-size 64
  mura train shards/ --recipe seed-densenet --model resnet18 \\
      --weights models:/mura-encoder-resnet18/1"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "shards",
        help="shards folder written by `mura ingest` (an archive or PACS: ingest it first)",
    )
    p.add_argument(
        "--model",
        default="resnet18",
        help="the encoder's architecture, a torchvision backbone (resnet18, resnet34, "
        "densenet121, densenet169, efficientnet_b0, …; default resnet18); train with the "
        "same --model",
    )
    p.add_argument(
        "--size", type=int, default=None, help="input size (default: the shards' size, ≤ 224)"
    )
    p.add_argument("--epochs", type=int, default=100, help="epochs (default 100)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="images per worker and step, two views each (default 64; VICReg needs >= 2)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=1e-3,
        help="AdamW peak learning rate, after a warm-up of a tenth of the epochs (at most 10), "
        "then cosine (default 1e-3)",
    )
    p.add_argument(
        "--projector-dim",
        type=int,
        default=2048,
        help="width of VICReg's 3-layer projector (default 2048)",
    )
    add_worker_arguments(p)
    add_run_arguments(
        p,
        experiment="mura-pretrain",
        register="mura-encoder-<model>",
        storage="checkpoints and the encoder bundle",
        seed="the initial weights, data order and augmentation",
    )


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    if isinstance(parse_source(args.shards), PacsSource):
        raise PretrainError(
            f"{args.shards} is a PACS: `mura ingest` it into shards first, then "
            "`mura pretrain SHARDS`"
        )
    return PretrainConfig(
        shards=Path(args.shards),
        model=args.model,
        size=args.size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        projector_dim=args.projector_dim,
        workers=args.workers,
        gpu=args.gpu,
        cpus_per_worker=args.cpus_per_worker,
        experiment=args.experiment,
        register=args.register,
        tracking_uri=args.tracking_uri,
        storage=args.storage,
        name=args.name,
        max_failures=args.max_failures,
        seed=args.seed,
        address=args.address,
    )


def command(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    result = run_pretraining(cfg)  # a Ray command (RAY_COMMANDS): log captured, Ray stopped
    last = result.history[-1].loss if result.history else None
    console.print()
    console.print(
        f"encoder {cfg.model}: {len(result.history)} epochs on {result.images} images, "
        f"final loss {float('nan') if last is None else last:.4f}"
    )
    console.print(f"encoder weights: {result.encoder_file} (mura train --weights FILE)")
    console.print(
        f"MLflow run {result.run_id} (experiment {cfg.experiment}) at {result.tracking_uri}"
    )
    console.print(
        f"model {result.model_uri}; registered {result.registered_name} version {result.version}"
    )
    console.print(
        f"next: mura train {args.shards} --recipe seed-densenet --model {cfg.model} "
        f"--weights models:/{result.registered_name}/{result.version}"
    )
    return 0


def register(sub: argparse._SubParsersAction, summary: str) -> None:
    p = sub.add_parser("pretrain", help=summary, **wrapped_help(DESCRIPTION, EPILOG))
    add_arguments(p)
    p.set_defaults(func=command)


def main(argv: Sequence[str] | None = None) -> int:
    return job_main("pretrain", DESCRIPTION, add_arguments, command, argv)


if __name__ == "__main__":
    sys.exit(main())
