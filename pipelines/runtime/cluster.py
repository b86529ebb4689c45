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

from pipelines.runtime.guard import guarded_start, release
from pipelines.runtime.ports import free_ports


def configure_data_context() -> DataContext:
    """DataContext options, set before any dataset is created (Ray copies the context then)."""
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = True
    ctx.enable_operator_progress_bars = True
    ctx.print_on_execution_start = False
    return ctx


@contextmanager
def data_context(*, preserve_order: bool | None = None, **options: Any) -> Iterator[DataContext]:
    """Set DataContext options for the datasets created inside the block, then restore.

    Ray copies the current context into a dataset when it is created, so options set here
    stick to the datasets made in the block and do not leak into other pipelines.
    `preserve_order` is the execution option of that name (blocks come out in order).
    """
    ctx = configure_data_context()
    previous = {name: getattr(ctx, name) for name in options}
    previous_order = ctx.execution_options.preserve_order
    for name, value in options.items():
        setattr(ctx, name, value)
    if preserve_order is not None:
        ctx.execution_options.preserve_order = preserve_order
    try:
        yield ctx
    finally:
        for name, value in previous.items():
            setattr(ctx, name, value)
        ctx.execution_options.preserve_order = previous_order


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Join `address`, or start a local Ray, unless this process is already connected."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if address or os.environ.get("RAY_ADDRESS"):  # a Ray job's driver gets RAY_ADDRESS
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
    else:
        start_local_ray(num_cpus=num_cpus)


def start_local_ray(*, num_cpus: int | None = None) -> None:
    """A new local Ray on this machine (plain `ray.init()` would join a `ray start` cluster
    it finds, which --address is for), able to answer Ray's own State API.

    Ray Train's detached PlacementGroupCleaner asks the State API every second whether the
    Train controller is alive. The State API is served by the dashboard, and an actor finds
    its cluster from RAY_ADDRESS, else from the last `ray start` recorded in
    /tmp/ray/ray_current_cluster — a dead cluster's address after any `ray start` on this
    machine had stopped. Without a dashboard the cleaner logged "State API may be
    temporarily unavailable" every few seconds; with the stale file it died with "RpcError:
    Timed out while waiting for GCS". So: the dashboard on a free port, and the GCS on a
    port chosen here (RAY_GCS_SERVER_PORT) and named in RAY_ADDRESS while Ray starts, so
    that every Ray process inherits its own cluster's address. The driver's environment is
    restored right after (a later `ensure_ray` must not mistake it for a job's cluster).

    Everything Ray starts carries a mark that `pipelines.runtime.guard` sweeps when this process
    exits, SIGKILL included: no Ray process outlives its driver.
    """
    port, dashboard = free_ports(2)
    saved = {k: os.environ.get(k) for k in ("RAY_GCS_SERVER_PORT", "RAY_ADDRESS")}
    os.environ["RAY_GCS_SERVER_PORT"] = str(port)
    os.environ["RAY_ADDRESS"] = f"127.0.0.1:{port}"
    try:
        with guarded_start():
            ray.init(
                address="local",
                num_cpus=num_cpus,
                include_dashboard=True,
                dashboard_port=dashboard,
                logging_level=logging.WARNING,
            )
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_found_ray: list[bool] = []  # per command running (innermost last): was Ray running before it


@contextmanager
def ray_for_a_command() -> Iterator[None]:
    """Around one command: a Ray it starts (or joins) is shut down when it returns or fails,
    so no Ray process of the command outlives it; a Ray already running in this process (a
    test session, a notebook) is left as it was."""
    already = ray.is_initialized()
    _found_ray.append(already)
    try:
        yield
    finally:
        _found_ray.pop()
        if not already:
            _shutdown()


def done_with_ray() -> None:
    """The running command needs Ray no more (the demo, before it waits on its viewer): the
    Ray it started is shut down now rather than when it returns; a Ray that was running
    before the command, or one started outside any command, is left as it is."""
    if _found_ray and not _found_ray[-1]:
        _shutdown()


def _shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()
        release()  # the guard sweeps what shutdown left (see pipelines.runtime.guard)


def cluster_cpus() -> int:
    """CPUs Ray can schedule on (the whole cluster when joined to one)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def cpus_after_a_node_loss() -> float:
    """The CPUs left once the largest worker node is gone (a single node: all of them).

    What a run that must survive a lost node sizes itself by: Ray Train hands its workers'
    resources to Ray Data as excluded, so a worker group that takes every CPU left after the
    loss leaves Ray Data a budget of zero, and the restarted run waits for batches forever."""
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    workers = [
        node["Resources"].get("CPU", 0.0)
        for node in nodes
        if "node:__internal_head__" not in node["Resources"]
    ]
    total = sum(node["Resources"].get("CPU", 0.0) for node in nodes)
    return max(1.0, total - max(workers, default=0.0))
