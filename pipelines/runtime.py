"""Starting or joining Ray, in one place, so every pipeline behaves the same.

No address: a local Ray on this machine (the embedded default). An address (`auto`,
`ray://head:10001`, `127.0.0.1:6379`): join that cluster. A process that already called
`ray.init` (tests, notebooks) keeps its Ray.
"""

from __future__ import annotations

import logging
import os

import ray
import ray.data
from ray.data._internal.tensor_extensions.arrow import FixedShapeTensorFormat
from ray.data.context import DataContext


def configure_data_context() -> DataContext:
    """DataContext options, set before any dataset is created (Ray copies the context then).

    Pixels are written as Arrow's canonical fixed_shape_tensor so plain pyarrow (and anything
    else that speaks Arrow) reads the shards without Ray's extension types.
    """
    ctx = DataContext.get_current()
    ctx.arrow_fixed_shape_tensor_format = FixedShapeTensorFormat.ARROW_NATIVE
    ctx.enable_progress_bars = True
    ctx.enable_operator_progress_bars = True
    ctx.print_on_execution_start = False
    return ctx


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Join `address`, or start a local Ray, unless this process is already connected."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)


def cluster_cpus() -> int:
    """CPUs Ray can schedule on (the whole cluster when joined to one)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))
