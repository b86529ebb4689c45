"""Does learning hold? The CI learning configuration over 10 seeds, then both DenseNet recipes.

1. The seed CNN exactly as CI trains it (tests/pipelines/learning.py: 600 forearm studies with
   bold signs at 64 px, 24 epochs, flips) for seeds 0..N-1: one line per run (seed, epochs,
   study-level test AUROC and kappa, seconds) and `learned K/N` (learned = study AUROC >= 0.9).
   A collapsed run counts as not learned; its figures come from the MLflow run it leaves.
2. `seed-densenet` and `mura-paper` at 128 px on a synthetic wrist + hand archive, random
   init (no ImageNet weights offline: `--weights none`), until convergence: early stopping
   once val loss has not improved for `--patience` epochs, at most `--max-epochs`.

Every run goes through `run_training` (Ray Train, MLflow in a temporary SQLite store, the
project's loop and presets). Learning curves (val loss and val study AUROC per epoch) go to
`--out/learn_cpu.png`, the figures to `--out/learn_cpu.json`.

    .venv/bin/python bench/learn.py                 # both parts (~40 min on 2 idle cores)
    .venv/bin/python bench/learn.py --part cnn --seeds 10
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mura_core.body_parts import BodyPart  # noqa: E402
from mura_core.recipes import Recipe, recipe  # noqa: E402
from mura_core.run_contract import EpochReport, TrainRunRecord  # noqa: E402
from mura_core.splits import SplitConfig  # noqa: E402
from mura_core.synth import SynthConfig, synthesize  # noqa: E402
from pipelines.ingest import IngestConfig, run_ingest  # noqa: E402
from pipelines.runtime.cluster import start_local_ray  # noqa: E402
from pipelines.train.config import TrainConfig  # noqa: E402
from pipelines.train.errors import TrainCollapsed  # noqa: E402
from pipelines.train.run import run_training  # noqa: E402
from tests.pipelines import learning  # noqa: E402

LEARNED_AUROC = 0.9
DENSENET_ARCHIVE = SynthConfig(
    studies=200,
    seed=11,
    size=256,
    sign_strength=4.0,
    body_parts=(BodyPart.WRIST, BodyPart.HAND),
)
DENSENET_SIZE = 128
# a quarter of the training patients for val (the default 7 % leaves ~10 val images here):
# early stopping and the threshold need a val split worth the name
DENSENET_SPLITS = SplitConfig(val_fraction=0.25)


@dataclass(frozen=True)
class Run:
    name: str
    seed: int
    epochs: int
    auroc: float | None
    kappa: float | None
    seconds: float
    collapsed: bool
    history: list[EpochReport]

    def line(self) -> str:
        auroc = "n/a" if self.auroc is None else f"{self.auroc:.3f}"
        kappa = "n/a" if self.kappa is None else f"{self.kappa:.3f}"
        per_epoch = self.seconds / max(self.epochs, 1)
        return (
            f"{self.name:<14} seed {self.seed:>2}  epochs {self.epochs:>3}  study AUROC {auroc}"
            f"  kappa {kappa}  {self.seconds:6.0f} s ({per_epoch:.1f} s/epoch)"
            + ("  COLLAPSED" if self.collapsed else "")
        )


def _history(client: MlflowClient, run_id: str) -> list[EpochReport]:
    """The run's epochs as its callback logged them (metric name = report field, step = epoch)."""
    rows: dict[int, dict[str, float]] = {}
    for key in ("train_loss", "val_loss", "val_study_auroc", "epoch_seconds"):
        for m in client.get_metric_history(run_id, key):
            rows.setdefault(int(m.step), {"epoch": int(m.step)})[key] = m.value
    return [EpochReport.from_dict(rows[k]) for k in sorted(rows)]


def train(name: str, shards: Path, chosen: Recipe, seed: int, work: Path) -> Run:
    """One training run; its figures read back from its MLflow run (collapsed or not)."""
    uri = f"sqlite:///{work / 'mlflow.db'}"
    cfg = TrainConfig(
        shards=shards,
        recipe=chosen,
        tracking_uri=uri,
        storage=work / "ray_results",
        experiment="bench-learn",
        register=f"bench-{name}",
        seed=seed,
        cam_examples=0,
        name=f"{name}-seed{seed}",
    )
    start, collapsed = time.perf_counter(), False
    try:
        run_id = run_training(cfg).run_id
    except TrainCollapsed as exc:
        collapsed, run_id = True, str(exc).split("MLflow run ")[1].split()[0]
    seconds = time.perf_counter() - start
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    record = TrainRunRecord.from_run(run.data.metrics, run.data.tags, run.data.params)
    history = _history(client, run_id)
    return Run(
        name,
        seed,
        len(history),
        record.figure("test", "study", "auroc"),
        record.figure("test", "study", "kappa"),
        seconds,
        collapsed,
        history,
    )


def shards_of(
    work: Path, config: SynthConfig, size: int, name: str, splits: SplitConfig | None = None
) -> Path:
    synthesize(work / f"{name}-archive", config)
    out = work / f"{name}-shards"
    source = work / f"{name}-archive"
    run_ingest(IngestConfig(source=source, out=out, size=size, splits=splits or SplitConfig()))
    return out


def cnn_part(work: Path, seeds: int) -> list[Run]:
    shards = shards_of(work, learning.ARCHIVE, learning.SHARD_SIZE, "learnable")
    runs = []
    for seed in range(seeds):
        runs.append(train("seed-cnn (CI)", shards, learning.ci_recipe(), seed, work))
        print(runs[-1].line(), flush=True)
    learned = sum(r.auroc is not None and r.auroc >= LEARNED_AUROC for r in runs)
    print(f"learned {learned}/{seeds}", flush=True)
    return runs


def densenet_part(work: Path, max_epochs: int, patience: int, lr: float | None) -> list[Run]:
    shards = shards_of(work, DENSENET_ARCHIVE, DENSENET_SIZE, "wrist-hand", DENSENET_SPLITS)
    runs = []
    for name in ("seed-densenet", "mura-paper"):
        chosen = recipe(name).override(
            size=DENSENET_SIZE, epochs=max_epochs, early_stop=patience, weights="none"
        )
        if lr is not None:
            chosen, name = chosen.override(lr=lr), f"{name}-lr{lr:g}"
        runs.append(train(name, shards, chosen, 0, work))
        print(runs[-1].line(), flush=True)
    return runs


def plot(runs: list[Run], path: Path) -> None:
    groups = {"seed CNN, CI config": [r for r in runs if r.name.startswith("seed-cnn")]}
    groups["DenseNet-169 @128 px, random init"] = [
        r for r in runs if not r.name.startswith("seed-cnn")
    ]
    groups = {title: group for title, group in groups.items() if group}  # the parts that ran
    fig, axes = plt.subplots(2, len(groups), figsize=(6 * len(groups), 8), squeeze=False)
    for col, (title, group) in enumerate(groups.items()):
        for r in group:
            epochs = [h.epoch for h in r.history]
            cnn = r.name.startswith("seed-cnn")
            label = f"seed {r.seed}" if cnn else f"{r.name} s{r.seed}"
            axes[0][col].plot(epochs, [h.val_loss for h in r.history], label=label)
            axes[1][col].plot(epochs, [h.val_study_auroc for h in r.history], label=label)
        axes[0][col].set_title(title)
        axes[0][col].set_ylabel("val loss")
        axes[1][col].set_ylabel("val study AUROC")
        axes[1][col].set_xlabel("epoch")
        axes[1][col].axhline(LEARNED_AUROC, color="grey", linestyle=":", linewidth=1)
        if group:
            axes[0][col].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("cnn", "densenet", "all"), default="all")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--max-epochs", type=int, default=20, help="DenseNet cap (default 20)")
    parser.add_argument(
        "--patience",
        type=int,
        default=6,
        help="DenseNet early stop: epochs without a val-loss gain (default 6: seed-densenet's "
        "lr drop after 5 stale epochs gets one chance)",
    )
    parser.add_argument(
        "--densenet-lr",
        type=float,
        default=None,
        help="DenseNet start lr instead of the recipes' 1e-4 (the papers' lr is for fine-tuning "
        "ImageNet weights; from random init, try 1e-3)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mura-bench-learn-"))
    start_local_ray()
    runs: list[Run] = []
    if args.part in ("cnn", "all"):
        runs += cnn_part(work, args.seeds)
    if args.part in ("densenet", "all"):
        runs += densenet_part(work, args.max_epochs, args.patience, args.densenet_lr)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.part == "all" else f"_{args.part}"
    suffix += "" if args.densenet_lr is None else f"_lr{args.densenet_lr:g}"
    plot(runs, args.out / f"learn_cpu{suffix}.png")
    (args.out / f"learn_cpu{suffix}.json").write_text(
        json.dumps([asdict(r) for r in runs], indent=1) + "\n"
    )
    print(f"curves: {args.out / f'learn_cpu{suffix}.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
