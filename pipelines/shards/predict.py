"""Batch inference with Ray Data: a pool of actors, each loading the model once.

`Predictor` is a module-level class (Ray's batch-inference pattern): its constructor gets the
model bundle's files as bytes (so no shared filesystem is needed on a cluster), rebuilds the
model once, and `__call__` scores a batch of shard rows under `torch.inference_mode` (bf16
autocast on GPU). Used by training-time evaluation, `mura evaluate` and screening (whose
actors, `scoring.ScreenPredictor` and `evidence.EvidenceMaker`, are subclasses).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import ray.data
import torch
from ray.data import ActorPoolStrategy

from mura_core.checkpoints import load_bundle
from mura_core.model_info import ModelInfo
from mura_core.shards import ShardsLayout, pixels_array
from mura_core.studies import Predictions
from pipelines.runtime.cluster import cluster_cpus
from pipelines.shards.shardsets import split_filter

# The shard columns a prediction carries along (those of `Predictions`, but `prob`).
PASS_THROUGH = tuple(f.name for f in fields(Predictions) if f.name != "prob")


def bundle_bytes(folder: Path) -> dict[str, bytes]:
    """Every file of a model bundle folder, by relative path."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _load(files: dict[str, bytes]) -> tuple[torch.nn.Module, ModelInfo]:
    """The bundle's model and info, through a folder removed once they are in memory (an
    actor may be killed, never exiting: a folder kept for its life leaked 300 MB a run)."""
    with tempfile.TemporaryDirectory(prefix="mura-model-") as tmp:
        folder = Path(tmp)
        for rel, data in files.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(data)
        return load_bundle(folder)


@dataclass(frozen=True)
class BundleRef:
    """A bundle put once in Ray's object store, fetched by each actor. Inline, a DenseNet's
    weights made the UDF 185 MiB (Ray warns it is too large) and were pickled per actor."""

    ref: ray.ObjectRef


class Predictor:
    """Scores shard rows: probability of abnormality per image."""

    def __init__(
        self, bundle: dict[str, bytes] | BundleRef, torch_threads: int | None = None
    ) -> None:
        if isinstance(bundle, BundleRef):
            bundle = ray.get(bundle.ref)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cpu" and torch_threads:
            torch.set_num_threads(torch_threads)
        model, self.info = _load(bundle)
        self.model = model.to(self.device).eval()
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.preset = self.info.eval_preset()

    def score(self, pixels: np.ndarray) -> np.ndarray:
        """(B, S, S) uint8 pixels → (B,) float64 probabilities of abnormality."""
        images = torch.from_numpy(pixels.copy())
        with torch.inference_mode():
            x = self.preset(images.to(self.device))
            if self.device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(
                self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"
            ):
                logits = self.model(x).float()
            # float64: a probability keeps its logit up to ±36 (temperature scaling is
            # fitted from probabilities); calibrated when the model carries T != 1
            probs = torch.sigmoid(logits.double() / self.info.temperature)
            return probs.reshape(-1).cpu().numpy()

    def __call__(self, batch: pa.Table) -> dict[str, np.ndarray]:
        prob = self.score(pixels_array(batch.column("pixels")))
        out = {
            name: batch.column(name).to_numpy(zero_copy_only=False)
            for name in PASS_THROUGH
            if name in batch.column_names
        }
        out["prob"] = prob
        return out


def predict(
    ds: ray.data.Dataset,
    bundle: dict[str, bytes],
    *,
    batch_size: int = 32,
    actors: int | None = None,
    gpus_per_actor: float = 0.0,
    predictor: type[Predictor] = Predictor,
    predictor_kwargs: dict[str, Any] | None = None,
) -> ray.data.Dataset:
    """Lazily map the rows through a pool of `predictor` actors (the default, `Predictor`:
    a `prob` column, pixels dropped; `ScreenPredictor` scores screening rows,
    `EvidenceMaker` makes CAMs and pictures).

    On CPU: one actor per 2+ cores by default, each reserving one CPU for Ray's scheduler
    but running torch on its share of the cores, so reading keeps a CPU of its own.
    """
    cpus = cluster_cpus()
    if gpus_per_actor:
        n = actors or max(1, int(ray.cluster_resources().get("GPU", 1) / gpus_per_actor))
        resources: dict[str, Any] = {"num_gpus": gpus_per_actor}
        threads = None
    else:
        n = actors or max(1, cpus // 4)
        resources = {"num_cpus": 1}
        threads = max(1, cpus // n)
    return ds.map_batches(
        predictor,
        batch_size=batch_size,
        batch_format="pyarrow",
        fn_constructor_kwargs={
            "bundle": BundleRef(ray.put(bundle)),
            "torch_threads": threads,
            **(predictor_kwargs or {}),
        },
        compute=ActorPoolStrategy(size=n),
        **resources,
    )


def collect(ds: ray.data.Dataset) -> Predictions:
    """All rows of a (small) prediction dataset, as numpy columns."""
    frame = ds.to_pandas()
    columns = {name: frame[name].to_numpy() for name in frame.columns}
    if "label" in frame.columns:  # nullable int8: NaN or <NA> where unknown
        columns["label"] = frame["label"].to_numpy(dtype=np.float64, na_value=np.nan)
    return Predictions.from_columns(columns)


def predict_splits(
    shards: Path,
    splits: tuple[str, ...],
    bundle: dict[str, bytes],
    *,
    body_part: str | None = None,
    batch_size: int = 32,
) -> dict[str, Predictions]:
    """Probabilities for some splits of a shards folder, in one pass (one actor pool)."""
    expr = split_filter(splits[0], body_part)
    for split in splits[1:]:
        expr = expr | split_filter(split, body_part)
    ds = ray.data.read_parquet(str(ShardsLayout(Path(shards)).images))
    ds = ds.select_columns(["pixels", *PASS_THROUGH]).filter(expr=expr)
    rows = collect(predict(ds, bundle, batch_size=batch_size))
    return {split: rows.where(rows.split == split) for split in splits}
