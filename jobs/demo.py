"""`mura demo`: the whole system on the embedded default (local Ray, SQLite MLflow, synthetic data).

Each stage is the same library call its own command makes; the demo only chains them and
chooses small sizes so that it runs in minutes on a laptop: forearm and humerus studies
(long bones) with bold synthetic signs (sign strength 4) that stay visible at 64 px, the
seed CNN and a short DenseNet-169 run with flips only, compared and the better promoted to
@champion, which then screens a fresh incoming archive.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mlflow.tracking import MlflowClient

from mura_core.recipes import Recipe, recipe
from mura_core.records import BodyPart
from mura_core.sources import format_summary, list_source
from mura_core.synth import SynthConfig, synthesize
from pipelines.compare import DEFAULT_ALIAS, DEFAULT_METRIC, format_table, load_runs, plot, promote
from pipelines.ingest import IngestConfig, format_result, run_ingest
from pipelines.model_store import ModelSpecError
from pipelines.screen import ScreenConfig, ScreenError, run_screen
from pipelines.screen import format_result as format_screen
from pipelines.tracking import TrackingError
from pipelines.train import TrainConfig, TrainError, TrainResult, run_training, summary_text

from .common import progress

HELP = "run the system end to end on a synthetic archive (the embedded default)"
DESCRIPTION = (
    "Synthesize an archive, ingest it into Parquet shards with Ray Data, train the seed CNN "
    "and a short DenseNet-169 run with Ray Train (logged and registered in a local SQLite "
    "MLflow store), compare them and promote the better to @champion, then screen a fresh "
    "synthetic 'incoming' archive with the champion into a report, printing each stage's "
    "summary. Everything goes under --out; re-running reuses the archives."
)
EXTRA_ERRORS = (TrainError, TrackingError, ScreenError, ModelSpecError)
DEMO_PARTS = (BodyPart.FOREARM, BodyPart.HUMERUS)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="working folder")
    p.add_argument("--studies", type=int, default=500, help="studies to synthesize (default 500)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--size", type=int, default=160, help="longest image side (default 160)")
    p.add_argument("--shard-size", type=int, default=64, help="shard pixel size (default 64)")
    p.add_argument("--epochs", type=int, default=32, help="CNN epochs (default 32)")
    p.add_argument("--densenet-epochs", type=int, default=4, help="DenseNet-169 epochs (default 4)")
    p.add_argument(
        "--incoming", type=int, default=80, help="studies in the incoming archive (default 80)"
    )


def command(args: argparse.Namespace) -> int:
    out = Path(args.out).expanduser().resolve()
    archive_dir, shards_dir = out / "archive", out / "shards"
    if archive_dir.exists():
        print(f"[demo] 1. reusing the synthetic archive at {archive_dir}")
    else:
        print(f"[demo] 1. synthesize {args.studies} studies into {archive_dir}")
        synthesize(
            archive_dir,
            SynthConfig(
                studies=args.studies,
                seed=args.seed,
                size=args.size,
                sign_strength=4.0,
                body_parts=DEMO_PARTS,
            ),
            progress=progress("studies"),
        )
    print(format_summary(list_source(archive_dir)))

    print(f"\n[demo] 2. ingest with Ray Data into {shards_dir}")
    print(
        format_result(
            run_ingest(IngestConfig(source=archive_dir, out=shards_dir, size=args.shard_size))
        )
    )

    tracking = f"sqlite:///{out / 'mlflow.db'}"
    print(f"\n[demo] 3. train the seed CNN with Ray Train, log to MLflow ({tracking})")
    cnn = recipe("seed-cnn").override(size=args.shard_size, batch_size=32, epochs=args.epochs)
    trained = [_train(args, out, shards_dir, tracking, cnn)]
    densenet = recipe("seed-densenet").override(
        size=args.shard_size, batch_size=32, epochs=args.densenet_epochs, lr=1e-3
    )
    print(
        f"\n[demo] 4. train a small DenseNet-169 run ({args.densenet_epochs} epochs, "
        f"{args.shard_size} px, random init: no ImageNet weights offline)"
    )
    trained.append(_train(args, out, shards_dir, tracking, densenet))

    print("\n[demo] 5. compare the two runs in MLflow and promote the better to @champion")
    client = MlflowClient(tracking)
    rows = load_runs(client, run_ids=[r.run_id for r in trained], metric=DEFAULT_METRIC)
    print(format_table(rows, DEFAULT_METRIC))
    best = rows[0]
    promoted = promote(client, best.run_id)
    plot(rows, DEFAULT_METRIC, out / "compare.png")
    value = best.value(DEFAULT_METRIC)
    print(
        f"champion → {promoted.name} v{promoted.version} (run {best.run_id}, {DEFAULT_METRIC} "
        f"{'n/a' if value is None else f'{value:.3f}'}); chart {out / 'compare.png'}"
    )

    incoming = out / "incoming"
    print(f"\n[demo] 6. screen a fresh incoming archive ({incoming}) with the champion")
    if not incoming.exists():
        synthesize(
            incoming,
            SynthConfig(
                studies=args.incoming,
                seed=args.seed + 1000,
                size=args.size,
                sign_strength=4.0,
                body_parts=DEMO_PARTS,
            ),
            progress=progress("studies"),
        )
    screened = run_screen(
        ScreenConfig(
            source=incoming,
            out=out / "screening",
            models=("@" + DEFAULT_ALIAS,),
            tracking_uri=tracking,
        )
    )
    print(format_screen(screened))

    print(f"\nreport: {screened.out / 'report.html'}")
    print(f"MLflow store: {out / 'mlflow.db'}")
    print(f"open the MLflow UI: mlflow ui --backend-store-uri {tracking}")
    return 0


def _train(
    args: argparse.Namespace, out: Path, shards: Path, tracking: str, chosen: Recipe
) -> TrainResult:
    result = run_training(
        TrainConfig(
            shards=shards,
            recipe=chosen.with_augment("flips"),
            tracking_uri=tracking,
            storage=out / "ray_results",
            seed=args.seed,
        )
    )
    print(summary_text(result.splits, chosen.model))
    print(
        f"MLflow run {result.run_id}; registered {result.registered_name} version {result.version}"
    )
    return result


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help=HELP, description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=command, extra_errors=EXTRA_ERRORS)
