"""Per-epoch pretraining metrics to MLflow and the console, from the Ray Train controller.

`pipelines.train.callback.EpochLogger` with `mura pretrain`'s report row
(`mura_core.run_contract.PretrainEpochReport`) and console line: rank 0's metrics are logged
with `step=epoch` to the run the driver opened, an epoch logged before a worker failure is
never logged twice, and the epoch's line reaches the console through the progress feed
(the first, the last and about ten in between; the log and MLflow hold every epoch).
"""

from __future__ import annotations

from typing import Any

from mura_core.run_contract import PretrainEpochReport
from pipelines.train.callback import EpochLogger, shown_figures

SHOWN = ("loss", "invariance", "variance", "covariance", "embedding_std")
COLLAPSED_VARIANCE = 0.9  # the variance hinge near its maximum (1): the embeddings have no spread


def epoch_line(row: PretrainEpochReport, epochs: int, elapsed: float) -> str:
    """`[pretrain] epoch 3/100  loss 21.3…  lr 1.00e-03  (29s)`, flagged when collapsed."""
    collapsed = (
        "  (embeddings collapsing: the variance term is near its maximum)"
        if (row.variance or 0.0) > COLLAPSED_VARIANCE
        else ""
    )
    return (
        f"[pretrain] epoch {row.epoch}/{epochs}  {shown_figures(row, SHOWN)}  "
        f"lr {row.lr or 0:.2e}  ({elapsed:.0f}s){collapsed}"
    )


class PretrainLogger(EpochLogger):
    """Logs rank 0's epoch report to MLflow run `run_id`; a console line now and then."""

    report = PretrainEpochReport
    label = "pretrain"

    def line(self, row: Any, elapsed: float) -> str:
        return epoch_line(row, self.epochs, elapsed)
