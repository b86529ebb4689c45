"""Training on Ray Train: recipes from the papers, study-level evaluation, MLflow."""

from pipelines.train.config import TrainConfig
from pipelines.train.errors import TrainCollapsed, TrainError
from pipelines.train.evaluation import SplitResult, summary_text, table1_row
from pipelines.train.finish import TrainResult
from pipelines.train.prepare import preflight
from pipelines.train.run import run_training

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
