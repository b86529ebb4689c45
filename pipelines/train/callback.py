"""Per-epoch metrics to MLflow and the console, from the Ray Train controller.

A `ray.train.UserCallback` runs in the controller process (not the driver, not a worker)
after every `ray.train.report`. It logs rank 0's metrics with `step=epoch` to the run the
driver opened, and never logs a step twice: after a worker failure the run resumes from the
last checkpoint, and an epoch reported before the failure is skipped, not repeated. The
controller's own output goes to the log, so the epoch's line reaches the user's console
through the driver's progress feed: the first, the last, every k-th (about ten lines a run)
and any collapsed epoch; MLflow and the log hold every epoch.
"""

from __future__ import annotations

import math
import time
from typing import Any

import ray.train
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from ..progress import ProgressSink

SHOWN = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_study_auroc")
PIPED_LINES = 10


def epoch_line(row: dict[str, Any], epochs: int, elapsed: float) -> str:
    """`epoch 3/32  train_loss 0.6849 … lr 1.00e-03  (29s)`, flagged when collapsed."""
    shown = "  ".join(f"{k} {row[k]:.4f}" for k in SHOWN if k in row)
    collapsed = (
        "  (val outputs collapsed: no spread, or all one side and shown not to rank)"
        if row.get("val_collapsed")
        else ""
    )
    return (
        f"[train] epoch {int(row.get('epoch', 0))}/{epochs}  {shown}  "
        f"lr {row.get('lr', 0):.2e}  ({elapsed:.0f}s){collapsed}"
    )


class EpochLogger(ray.train.UserCallback):
    """Logs rank 0's epoch metrics to MLflow run `run_id`; one console line per epoch."""

    def __init__(
        self,
        tracking_uri: str,
        run_id: str,
        logged_steps: tuple[int, ...],
        epochs: int,
        sink: ProgressSink | None = None,
        every: int | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.epochs = epochs
        self.logged = set(logged_steps)
        self.sink = sink
        self.every = every or max(1, math.ceil(epochs / PIPED_LINES))
        self.started = time.time()
        self.collapsed = False  # the last epoch's val outputs had no spread

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
        line = epoch_line(row, self.epochs, time.time() - self.started)
        print(line, flush=True)  # the log
        # the console: the first and last epoch, every `every`-th, and each epoch where the
        # val outputs collapse or regain their spread (a plateau is one line, not one an epoch)
        collapsed = bool(row.get("val_collapsed"))
        changed, self.collapsed = collapsed != self.collapsed, collapsed
        if changed and not collapsed:
            line += "  (val outputs have spread again)"
        if self.sink is not None and (
            epoch % self.every == 0 or epoch in (1, self.epochs) or changed
        ):
            self.sink.line(line)

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        for rank, exc in worker_exceptions.items():
            line = (
                f"[train] worker {rank} failed: {type(exc).__name__}: {exc} — resuming from "
                "the last checkpoint if failures remain"
            )
            print(line, flush=True)
            if self.sink is not None:
                self.sink.line(line)
