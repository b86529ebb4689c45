"""Starting or joining Ray, in one place, so every pipeline behaves the same.

No address: a new local Ray on this machine (the embedded default), unless RAY_ADDRESS is set
(a job submitted to a cluster: join it). An address (`auto`, `ray://head:10001`,
`127.0.0.1:6379`): join that cluster. A process that already called
`ray.init` (tests, notebooks) keeps its Ray.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ray
import ray.data
from ray.data.context import DataContext


def configure_data_context() -> DataContext:
    """DataContext options, set before any dataset is created (Ray copies the context then)."""
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = True
    ctx.enable_operator_progress_bars = True
    ctx.print_on_execution_start = False
    return ctx


@contextmanager
def data_context(**options: Any) -> Iterator[DataContext]:
    """Set DataContext options for the datasets created inside the block, then restore.

    Ray copies the current context into a dataset when it is created, so options set here
    stick to the datasets made in the block and do not leak into other pipelines.
    """
    ctx = configure_data_context()
    previous = {name: getattr(ctx, name) for name in options}
    for name, value in options.items():
        setattr(ctx, name, value)
    try:
        yield ctx
    finally:
        for name, value in previous.items():
            setattr(ctx, name, value)


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Join `address`, or start a local Ray, unless this process is already connected."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if address or os.environ.get("RAY_ADDRESS"):  # a Ray job's driver gets RAY_ADDRESS
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
    else:
        # "local": a new local Ray even when another one runs on this machine (plain
        # ray.init() would join a `ray start` cluster it finds, which --address is for)
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            logging_level=logging.WARNING,
        )


def cluster_cpus() -> int:
    """CPUs Ray can schedule on (the whole cluster when joined to one)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))
