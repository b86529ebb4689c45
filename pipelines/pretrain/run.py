"""`mura pretrain`: a VICReg encoder on Ray Train from unlabeled images, logged and registered.

Top to bottom: pre-flight checks (a shards folder — a raw archive is one line saying to
ingest it first — with train + val images for at least one batch per worker, a model that
can be pretrained, the numbers, the tracking store; all before Ray or a worker starts) → open
the MLflow run (params; the same `--name` again resumes it) → `TorchTrainer` over the train
and val images (`pipelines.pretrain.loop`; per-epoch loss and terms logged by a controller
callback, a checkpoint every epoch, resume after a worker failure) → the last checkpoint's
encoder as a bundle (`encoder.pt`: the `--weights FILE` state dict; `weights.pt` +
`model.json` with `extra.kind = "encoder"`), kept beside the run's checkpoints and logged
and registered through `pipelines.registry.model_store.log_bundle`.

Which images: the train and val splits, never test. Labels are not read, so val's images
teach the encoder nothing about val's labels, and the downstream classifier's val split
only chooses its checkpoint and threshold; the test split's images stay unseen by every
stage, so the study-level test metrics of a classifier started from this encoder remain a
fair estimate on patients no part of the system has looked at.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import ray
import ray.train
import torch
from ray.data import ExecutionOptions, RandomSeedConfig
from ray.train.torch import TorchTrainer

from mura_core import __version__
from mura_core.checkpoints import load_training_checkpoint, save_bundle
from mura_core.errors import MuraError
from mura_core.model_info import MAX_SIZE, ModelInfo, ModelOrigin
from mura_core.run_contract import ModelVersionTags, PretrainEpochReport, pretrain_tags
from mura_core.shards import ShardsLayout
from mura_core.ssl import (
    ENCODER_FILE,
    ENCODER_KIND,
    GRAY_MEAN,
    GRAY_STD,
    METHOD,
    build_ssl_model,
    encoder_state,
    placeholder_classifier,
)
from pipelines.pretrain.callback import PretrainLogger
from pipelines.pretrain.loop import DATASET, PretrainLoop, pretrain_loop_per_worker
from pipelines.registry.model_store import log_bundle
from pipelines.registry.tracking import (
    check_tracking,
    file_digest,
    git_commit,
    resolve_tracking_uri,
    use_tracking,
)
from pipelines.runtime.cluster import cluster_cpus, data_context, ensure_ray
from pipelines.runtime.console import console
from pipelines.runtime.progress import progress_feed
from pipelines.shards.shardsets import ShardStats, shard_stats
from pipelines.train.data import split_dataset
from pipelines.train.session import (
    OpenRun,
    RunPlace,
    finished,
    fit,
    new_run,
    resumed_run,
    run_config,
    scaling,
)

SPLITS = ("train", "val")  # never test: see the module docstring
ENCODER_DIR = "encoder"  # the final bundle, beside the run's checkpoints
DEFAULT_SIZE_CAP = 224  # default --size: the shards' size, at most this


class PretrainError(MuraError):
    """A whole-run problem found before pretraining, or a pretraining run that failed."""


@dataclass(frozen=True)
class PretrainConfig:
    """One pretraining run; the CLI builds it from flags."""

    shards: Path
    model: str = "resnet18"
    size: int | None = None  # None: the shards' size, at most DEFAULT_SIZE_CAP
    epochs: int = 100
    batch_size: int = 64  # per worker
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float | None = None  # None: a tenth of the epochs, at most 10
    projector_dim: int = 2048
    workers: int = 1
    gpu: bool = False
    cpus_per_worker: float | None = None
    experiment: str = "mura-pretrain"
    register: str | None = None
    tracking_uri: str | None = None
    storage: Path | None = None
    name: str | None = None
    max_failures: int = 2
    seed: int = 0
    address: str | None = None

    @property
    def registered_name(self) -> str:
        return self.register or f"mura-encoder-{self.model}"

    @property
    def warmup(self) -> float:
        return self.warmup_epochs if self.warmup_epochs is not None else min(10, self.epochs / 10)


@dataclass(frozen=True)
class Checked:
    """What the pre-flight checks found."""

    shards: Path
    stats: ShardStats
    images: int  # train + val
    size: int
    uri: str


@dataclass(frozen=True)
class PretrainResult:
    run_id: str
    experiment_id: str
    model_uri: str
    registered_name: str
    version: str | None
    history: list[PretrainEpochReport]
    tracking_uri: str
    bundle: Path  # the encoder bundle kept on disk
    encoder_file: Path  # its `--weights FILE` state dict
    images: int


def _check_source(shards: Path) -> None:
    """A folder that is an archive, not shards: one line saying to ingest it first."""
    layout = ShardsLayout(shards)
    if shards.is_dir() and not layout.manifest.is_file() and not layout.images.is_dir():
        raise PretrainError(
            f"{shards} is not a shards folder (no {layout.manifest.name}): if it is an "
            f"archive, run `mura ingest {shards} --out SHARDS` first, then "
            "`mura pretrain SHARDS`"
        )


def preflight(cfg: PretrainConfig) -> Checked:
    """Every whole-run check, before Ray or a worker starts: raises one-line errors."""
    shards = cfg.shards.expanduser().resolve()
    _check_source(shards)
    stats = shard_stats(shards)
    for name, value, least in (
        ("--epochs", cfg.epochs, 1),
        ("--batch-size", cfg.batch_size, 2),
        ("--workers", cfg.workers, 1),
        ("--projector-dim", cfg.projector_dim, 2),
    ):
        if value < least:
            raise PretrainError(
                f"{name} must be >= {least}"
                + (
                    " (VICReg's variance needs two images a batch)"
                    if name == "--batch-size"
                    else ""
                )
            )
    if not cfg.lr > 0 or cfg.weight_decay < 0 or cfg.warmup < 0:
        raise PretrainError("--lr must be > 0, weight decay and warm-up >= 0")
    size = cfg.size if cfg.size is not None else min(stats.size, DEFAULT_SIZE_CAP)
    if not 32 <= size <= MAX_SIZE:
        raise PretrainError(f"--size must be within 32..{MAX_SIZE}, got {size}")
    images = sum(stats.images(split) for split in SPLITS)
    if images < cfg.batch_size * cfg.workers:
        raise PretrainError(
            f"{shards} holds {images} train + val images: fewer than one batch per worker "
            f"(--batch-size {cfg.batch_size} × --workers {cfg.workers}); lower --batch-size"
        )
    with torch.random.fork_rng(devices=[]):
        build_ssl_model(cfg.model, size=size, projector_dim=2)  # an unknown model fails here
    uri = resolve_tracking_uri(cfg.tracking_uri)
    check_tracking(uri)
    return Checked(shards, stats, images, size, uri)


def encoder_info(cfg: PretrainConfig, size: int, **extra: Any) -> ModelInfo:
    """The model.json of the encoder (and of its checkpoints): says it is an encoder."""
    return ModelInfo(
        model=cfg.model,
        size=size,
        mean=GRAY_MEAN,
        std=GRAY_STD,
        extra=ModelOrigin(kind=ENCODER_KIND, method=METHOD, **extra),
    )


def _params(cfg: PretrainConfig, checked: Checked, name: str) -> dict[str, str]:
    fields = dataclasses.asdict(cfg)
    params = {
        k: str(v)
        for k, v in fields.items()
        if k not in ("shards", "tracking_uri", "storage", "address", "register", "name")
    }
    params.update(
        {
            "method": METHOD,
            "size": str(checked.size),
            "warmup_epochs": str(cfg.warmup),
            "splits": "+".join(SPLITS),
            "data.images": str(checked.images),
            "data.manifest_digest": file_digest(ShardsLayout(checked.shards).manifest),
            "data.shard_size": str(checked.stats.size),
            "git_commit": git_commit(),
            "tool_version": __version__,
            "ray_train_name": name,
        }
    )
    return params


def _open_run(cfg: PretrainConfig, checked: Checked, client: Any, place: RunPlace) -> OpenRun:
    """A new MLflow run with its params, or — the same `--name` again — the earlier one."""
    found = resumed_run(client, place, PretrainEpochReport.STEP_METRIC)
    if found is not None:
        return found
    tags = pretrain_tags(ENCODER_KIND, METHOD, cfg.model)
    return new_run(client, place, cfg.experiment, tags, _params(cfg, checked, place.name))


def _dataset(checked: Checked, seed: int) -> Any:
    """Train + val pixels (labels never used), held in the object store when they fit in a
    quarter of it, blocks in a new seeded order every epoch (as `mura train` reads them)."""
    store = ray.available_resources().get("object_store_memory", 0)
    with data_context(enable_progress_bars=False, preserve_order=True):
        first, *rest = (split_dataset(checked.shards, split, None) for split in SPLITS)
        ds = first.union(*rest) if rest else first
        if checked.images * checked.stats.size**2 < store / 4:
            ds = ds.materialize()
        return ds.randomize_block_order(
            seed=RandomSeedConfig(seed=seed, reseed_after_execution=True)
        )


def _trainer(
    cfg: PretrainConfig, checked: Checked, place: RunPlace, run: OpenRun, sink: Any
) -> TorchTrainer:
    per_worker = checked.images // cfg.workers
    loop = PretrainLoop(
        model=cfg.model,
        size=checked.size,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup_epochs=cfg.warmup,
        projector_dim=cfg.projector_dim,
        info=encoder_info(cfg, checked.size, checkpoint="vicreg encoder + projector"),
        steps_per_epoch=max(1, per_worker // cfg.batch_size),
        seed=cfg.seed,
        # the whole share when small, else as many rows as ~256 MB of pixels hold
        shuffle_rows=int(max(4 * cfg.batch_size, min(per_worker, 2**28 // checked.stats.size**2))),
        torch_threads=max(1, int(cluster_cpus() // cfg.workers)),
        images=checked.images,
        progress=sink,
    )
    return TorchTrainer(
        pretrain_loop_per_worker,
        train_loop_config={"loop": loop},
        scaling_config=scaling(cfg),
        run_config=run_config(
            cfg,
            place,
            ray.train.CheckpointConfig(num_to_keep=2),
            PretrainLogger(checked.uri, run.run_id, run.logged, cfg.epochs, sink),
        ),
        datasets={DATASET: _dataset(checked, cfg.seed)},
        dataset_config=ray.train.DataConfig(
            datasets_to_split=[DATASET], execution_options=ExecutionOptions(preserve_order=True)
        ),
    )


def run_pretraining(cfg: PretrainConfig) -> PretrainResult:
    """Pretrain, then keep, log and register the encoder; see the module docstring."""
    checked = preflight(cfg)
    client = check_tracking(checked.uri)
    place = RunPlace.of(cfg, f"pretrain-{METHOD}-{cfg.model}", "pretrain")
    run = _open_run(cfg, checked, client, place)
    console.print(
        f"[pretrain] {METHOD} {cfg.model} at {checked.size}px on {checked.images} train + val "
        f"images (labels unused), {cfg.epochs} epochs, batch {cfg.batch_size} × {cfg.workers}"
    )
    with finished(client, run.run_id, place):
        ensure_ray(cfg.address)
        with progress_feed(summary=False) as sink:
            result = fit(_trainer(cfg, checked, place, run, sink))
        return _finish(cfg, checked, result, place.folder / ENCODER_DIR, client, run.run_id)


def save_encoder_bundle(folder: Path, model: Any, info: ModelInfo) -> Path:
    """`encoder.pt` (the `--weights FILE` state dict) + a bundle (`weights.pt`: the encoder
    in a zero-headed classifier, so `load_bundle` and MLflow's flavour load it;
    `model.json`: `extra.kind = "encoder"`) in `folder`."""
    state = encoder_state(model)
    save_bundle(folder, placeholder_classifier(info.model, size=info.size, state=state), info)
    torch.save(state, folder / ENCODER_FILE)
    return folder


def _finish(
    cfg: PretrainConfig,
    checked: Checked,
    result: ray.train.Result,
    folder: Path,
    client: Any,
    run_id: str,
) -> PretrainResult:
    """The last checkpoint's encoder as a bundle on disk, logged and registered."""
    if result.checkpoint is None:
        raise PretrainError("pretraining reported no checkpoint")
    with tempfile.TemporaryDirectory(prefix="mura-pretrain-") as tmp:
        ckpt = Path(result.checkpoint.to_directory(str(Path(tmp) / "ckpt")))
        model = build_ssl_model(cfg.model, size=checked.size, projector_dim=cfg.projector_dim)
        state = load_training_checkpoint(ckpt, model, PretrainEpochReport)
    last = state.history[-1] if state.history else PretrainEpochReport(0)
    info = encoder_info(
        cfg,
        checked.size,
        run_id=run_id,
        epochs=state.epoch,
        images=checked.images,
        splits="+".join(SPLITS),
        final_loss=float("nan") if last.loss is None else last.loss,
    )
    save_encoder_bundle(folder, model, info)
    use_tracking(checked.uri)
    with mlflow.start_run(run_id=run_id):
        model_uri, version = log_bundle(
            folder,
            registered_name=cfg.registered_name,
            tags=ModelVersionTags(run_id, seed=str(cfg.seed), kind=ENCODER_KIND, method=METHOD),
        )
    return PretrainResult(
        run_id=run_id,
        experiment_id=client.get_run(run_id).info.experiment_id,
        model_uri=model_uri,
        registered_name=cfg.registered_name,
        version=version,
        history=list(state.history),
        tracking_uri=checked.uri,
        bundle=folder,
        encoder_file=folder / ENCODER_FILE,
        images=checked.images,
    )
