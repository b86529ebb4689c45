"""Training on Ray Train: recipes from the papers, study-level evaluation, MLflow."""

from pipelines.train.evaluation import SplitResult, summary_text, table1_row
from pipelines.train.run import (
    TrainCollapsed,
    TrainConfig,
    TrainError,
    TrainResult,
    preflight,
    run_training,
)

__all__ = [
    "SplitResult",
    "TrainCollapsed",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "preflight",
    "run_training",
    "summary_text",
    "table1_row",
]
