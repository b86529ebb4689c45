"""Per-epoch metrics to MLflow and the console, from the Ray Train controller.

A `ray.train.UserCallback` runs in the controller process (not the driver, not a worker)
after every `ray.train.report`. It logs rank 0's metrics with `step=epoch` to the run the
driver opened, and never logs a step twice: after a worker failure the run resumes from the
last checkpoint, and an epoch reported before the failure is skipped, not repeated.
"""

from __future__ import annotations

import math
import time
from typing import Any

import ray.train
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient


class EpochLogger(ray.train.UserCallback):
    """Logs rank 0's epoch metrics to MLflow run `run_id` and prints one line per epoch."""

    def __init__(
        self, tracking_uri: str, run_id: str, epochs: int, logged_steps: tuple[int, ...] = ()
    ) -> None:
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.epochs = epochs
        self.logged = set(logged_steps)
        self.started = time.time()

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any
    ) -> None:
        if not metrics:
            return
        row = metrics[0]
        epoch = int(row.get("epoch", 0))
        if epoch in self.logged:
            return
        now = int(time.time() * 1000)
        values = [
            Metric(key, float(value), now, epoch)
            for key, value in row.items()
            if key != "epoch" and isinstance(value, int | float) and math.isfinite(float(value))
        ]
        MlflowClient(self.tracking_uri).log_batch(self.run_id, metrics=values)
        self.logged.add(epoch)
        shown = "  ".join(
            f"{k} {row[k]:.4f}"
            for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_study_auroc")
            if k in row
        )
        print(
            f"[train] epoch {epoch}/{self.epochs}  {shown}  lr {row.get('lr', 0):.2e}  "
            f"({time.time() - self.started:.0f}s)",
            flush=True,
        )

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        for rank, exc in worker_exceptions.items():
            print(
                f"[train] worker {rank} failed: {type(exc).__name__}: {exc} — resuming from "
                "the last checkpoint if failures remain",
                flush=True,
            )
