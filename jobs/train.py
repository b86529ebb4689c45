"""`mura train` / `python -m jobs.train`: parse flags, call pipelines.train, print."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from jobs.common import add_run_arguments, add_worker_arguments, job_main
from mura_core.models import model_names
from mura_core.recipes import AUGMENT_MODES, RECIPES, recipe
from pipelines.runtime.console import console
from pipelines.train.config import TrainConfig
from pipelines.train.evaluation import summary_text
from pipelines.train.run import run_training

DESCRIPTION = (
    "Train a recipe from the papers on SHARDS (from `mura ingest`) with Ray Train: seed-cnn "
    "(the course paper's CNN), seed-densenet (its DenseNet-169) or mura-paper (Rajpurkar et "
    "al.). Every flag left unset keeps the recipe's value. Each epoch reports train/val loss, "
    "accuracy and study-level val AUROC and saves a checkpoint; at the end the best "
    "checkpoint(s) are evaluated on train/val/test, and the run (params, per-epoch metrics, "
    "plots, tables, CAMs, model) is logged to MLflow and the model registered. Tracking URI: "
    "MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("shards", type=Path, help="shards folder written by `mura ingest`")
    p.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default="seed-cnn",
        help="hyper-parameter preset (default seed-cnn)",
    )
    p.add_argument(
        "--model",
        default=None,
        help=f"override the recipe's model ({', '.join(model_names())}, or any "
        "torchvision classifier name)",
    )
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument(
        "--early-stop",
        type=int,
        default=None,
        metavar="N",
        help="stop once val loss has not improved for N epochs (default: run every epoch)",
    )
    p.add_argument("--size", type=int, default=None, help="override the input size")
    p.add_argument("--batch-size", type=int, default=None, help="override the batch size")
    p.add_argument("--lr", type=float, default=None, help="override the learning rate")
    p.add_argument(
        "--augment",
        choices=AUGMENT_MODES,
        default="recipe",
        help="recipe: the recipe's augmentation; flips: its flips only; none",
    )
    add_worker_arguments(p)
    p.add_argument(
        "--body-part", default=None, help="train on one study type, e.g. XR_WRIST (default: all)"
    )
    p.add_argument(
        "--weights",
        default=None,
        metavar="imagenet|none|FILE|models:/NAME/VERSION",
        help="initial weights: imagenet (torchvision's IMAGENET1K_V1, from the torch hub cache "
        "$TORCH_HOME/hub/checkpoints or downloaded there), none (random init), a state_dict "
        "file, or a registered model (models:/NAME/VERSION, models:/NAME@alias: e.g. an "
        "encoder from mura pretrain) (default: the recipe's: imagenet for seed-densenet and "
        "mura-paper, none for seed-cnn and scratch)",
    )
    p.add_argument(
        "--target-sensitivity",
        type=float,
        default=None,
        help="choose the operating threshold on val for this sensitivity "
        "(default: 0.5, as the paper)",
    )
    p.add_argument(
        "--per-part-threshold",
        action="store_true",
        help="with --target-sensitivity: choose one threshold per body part on val studies "
        "(MURA's study types differ widely); the model carries them, screening and evaluation "
        "use them",
    )
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="fit temperature scaling on val (study-level ECE before and after is logged); the "
        "model carries the temperature and screening and evaluation apply it",
    )
    add_run_arguments(
        p,
        experiment="mura-train",
        register="mura-<model>",
        storage="checkpoints",
        seed="the initial weights, data order, augmentation and dropout: the same seed, "
        "data and --workers give the same run",
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    chosen = (
        recipe(args.recipe)
        .override(
            model=args.model,
            epochs=args.epochs,
            early_stop=args.early_stop,
            size=args.size,
            batch_size=args.batch_size,
            lr=args.lr,
            weights=args.weights,
        )
        .with_augment(args.augment)
    )
    return TrainConfig(
        shards=args.shards,
        recipe=chosen,
        workers=args.workers,
        gpu=args.gpu,
        body_part=args.body_part,
        experiment=args.experiment,
        register=args.register,
        tracking_uri=args.tracking_uri,
        storage=args.storage,
        name=args.name,
        max_failures=args.max_failures,
        target_sensitivity=args.target_sensitivity,
        calibrate=args.calibrate,
        per_part_threshold=args.per_part_threshold,
        seed=args.seed,
        address=args.address,
        cpus_per_worker=args.cpus_per_worker,
    )


def command(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    result = run_training(cfg)
    console.print()
    console.print(summary_text(result.splits, cfg.recipe.model))
    console.print(f"weights: {result.weights}")
    console.print()
    console.print(
        f"MLflow run {result.run_id} (experiment {args.experiment}) at {result.tracking_uri}"
    )
    console.print(
        f"model {result.model_uri}; registered {result.registered_name} version "
        f"{result.version}; threshold {result.threshold:.3f}"
    )
    return 0


def register(sub: argparse._SubParsersAction, summary: str) -> None:
    p = sub.add_parser("train", help=summary, description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=command)


def main(argv: Sequence[str] | None = None) -> int:
    return job_main("train", DESCRIPTION, add_arguments, command, argv)


if __name__ == "__main__":
    sys.exit(main())
