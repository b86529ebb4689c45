"""Per-epoch metrics to MLflow and the console, from the Ray Train controller.

A `ray.train.UserCallback` runs in the controller process (not the driver, not a worker)
after every `ray.train.report`. It reads rank 0's row back as an `EpochReport`
(`mura_core.run_contract`) and logs its metrics with `step=epoch` to the run the
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

from mura_core.run_contract import EpochReport, PretrainEpochReport
from pipelines.registry.tracking import tracking_client
from pipelines.runtime.progress import ProgressSink

SHOWN = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_study_auroc")
PIPED_LINES = 10


def shown_figures(row: EpochReport | PretrainEpochReport, names: tuple[str, ...]) -> str:
    values = ((name, getattr(row, name)) for name in names)
    return "  ".join(f"{name} {value:.4f}" for name, value in values if value is not None)


def epoch_line(row: EpochReport, epochs: int, elapsed: float) -> str:
    """`epoch 3/32  train_loss 0.6849 … lr 1.00e-03  (29s)`, flagged when collapsed."""
    collapsed = (
        "  (val outputs collapsed: no spread, or all one side and shown not to rank)"
        if row.collapsed
        else ""
    )
    return (
        f"[train] epoch {row.epoch}/{epochs}  {shown_figures(row, SHOWN)}  "
        f"lr {row.lr or 0:.2e}  ({elapsed:.0f}s){collapsed}"
    )


class EpochLogger(ray.train.UserCallback):
    """Logs rank 0's epoch report to MLflow run `run_id`; one console line per epoch.

    `mura pretrain`'s logger is this one with its own report row and line
    (`pipelines.pretrain.callback.PretrainLogger`)."""

    report: type[EpochReport | PretrainEpochReport] = EpochReport
    label = "train"

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

    def line(self, row: Any, elapsed: float) -> str:
        return epoch_line(row, self.epochs, elapsed)

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any
    ) -> None:
        if not metrics:
            return
        row = self.report.from_dict(metrics[0])
        if row.epoch in self.logged:
            return
        now = int(time.time() * 1000)
        values = [Metric(key, value, now, row.epoch) for key, value in row.to_metrics().items()]
        tracking_client(self.tracking_uri).log_batch(self.run_id, metrics=values)
        self.logged.add(row.epoch)
        line = self.line(row, time.time() - self.started)
        print(line, flush=True)  # the log
        self._show(row, line)

    def _show(self, row: EpochReport | PretrainEpochReport, line: str) -> None:
        """The console: the first and last epoch, every `every`-th, and each epoch where the
        val outputs collapse or regain their spread (a plateau is one line, not one an
        epoch; a row that does not judge collapse: never)."""
        changed = False
        if row.collapsed is not None:
            changed, self.collapsed = row.collapsed != self.collapsed, row.collapsed
            if changed and not row.collapsed:
                line += "  (val outputs have spread again)"
        if self.sink is not None and (
            row.epoch % self.every == 0 or row.epoch in (1, self.epochs) or changed
        ):
            self.sink.line(line)

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        for rank, exc in worker_exceptions.items():
            line = (
                f"[{self.label}] worker {rank} failed: {type(exc).__name__}: {exc} — resuming "
                "from the last checkpoint if failures remain"
            )
            print(line, flush=True)
            if self.sink is not None:
                self.sink.line(line)
