"""Per-epoch pretraining metrics to MLflow and the console, from the Ray Train controller.

Like `pipelines.train.callback.EpochLogger` (which it follows): rank 0's metrics are logged
with `step=epoch` to the run the driver opened, an epoch logged before a worker failure is
never logged twice, and the epoch's line reaches the console through the progress feed
(the first, the last and about ten in between; the log and MLflow hold every epoch).
"""

from __future__ import annotations

import math
import time
from typing import Any

import ray.train
from mlflow.entities import Metric

from ..progress import ProgressSink
from ..tracking import tracking_client

SHOWN = ("loss", "invariance", "variance", "covariance", "embedding_std")
PIPED_LINES = 10
COLLAPSED_VARIANCE = 0.9  # the variance hinge near its maximum (1): the embeddings have no spread


def epoch_line(row: dict[str, Any], epochs: int, elapsed: float) -> str:
    """`[pretrain] epoch 3/100  loss 21.3…  lr 1.00e-03  (29s)`, flagged when collapsed."""
    shown = "  ".join(f"{k} {row[k]:.4f}" for k in SHOWN if k in row)
    collapsed = (
        "  (embeddings collapsing: the variance term is near its maximum)"
        if row.get("variance", 0.0) > COLLAPSED_VARIANCE
        else ""
    )
    return (
        f"[pretrain] epoch {int(row.get('epoch', 0))}/{epochs}  {shown}  "
        f"lr {row.get('lr', 0):.2e}  ({elapsed:.0f}s){collapsed}"
    )


class PretrainLogger(ray.train.UserCallback):
    """Logs rank 0's epoch metrics to MLflow run `run_id`; a console line now and then."""

    def __init__(
        self,
        tracking_uri: str,
        run_id: str,
        logged_steps: tuple[int, ...],
        epochs: int,
        sink: ProgressSink | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.epochs = epochs
        self.logged = set(logged_steps)
        self.sink = sink
        self.every = max(1, math.ceil(epochs / PIPED_LINES))
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
        tracking_client(self.tracking_uri).log_batch(self.run_id, metrics=values)
        self.logged.add(epoch)
        line = epoch_line(row, self.epochs, time.time() - self.started)
        print(line, flush=True)  # the log
        if self.sink is not None and (epoch % self.every == 0 or epoch in (1, self.epochs)):
            self.sink.line(line)

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        for rank, exc in worker_exceptions.items():
            line = (
                f"[pretrain] worker {rank} failed: {type(exc).__name__}: {exc} — resuming "
                "from the last checkpoint if failures remain"
            )
            print(line, flush=True)
            if self.sink is not None:
                self.sink.line(line)
