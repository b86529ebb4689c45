"""A Ray Train run and its MLflow run: the set-up `mura train` and `mura pretrain` share.

Top to bottom, as both commands use it:

1. `RunPlace.of`: the run's name (`--name`, else a stem stamped with the time) and its
   folder under the storage (`--storage`, default ./ray_results): Ray Train's checkpoints,
   the run's log and the file that ties it to its MLflow run.
2. `resumed_run` or `new_run`: the same `--name` again, so that Ray Train resumes from its
   last checkpoint, reopens the MLflow run that name opened before (its id is in
   `<storage>/<name>/mlflow_run_id`), with the epochs it already logged (steps of the
   report row's `STEP_METRIC`, `mura_core.run_contract`), so that none is logged twice;
   else a new run with the command's tags and params.
3. `scaling` and `run_config`: Ray Train's workers (a fraction of the CPUs when there are
   few: one is left to Ray Data's readers) and its run (name, storage, failures to recover
   from, the checkpoints kept, the epoch logger).
4. `fit`: the trainer run, and the process's Ctrl-C handler put back as it was.
5. `finished`: the MLflow run is marked FAILED when the body raises, FINISHED when it
   returns; the run file is forgotten once the run is over (a failed run keeps it, so that
   the same `--name` resumes it, unless the failure is one of `forget_on`).
"""

from __future__ import annotations

import datetime as dt
import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import ray.train
from mlflow.entities import RunStatus

from pipelines.registry.tracking import ensure_experiment
from pipelines.runtime.cluster import cpus_after_a_node_loss
from pipelines.runtime.console import console

MLFLOW_RUN_FILE = "mlflow_run_id"  # beside Ray Train's checkpoints: a rerun resumes the run


class RunSettings(Protocol):
    """The flags every Ray Train command has (`TrainConfig`, `PretrainConfig`)."""

    workers: int
    gpu: bool
    cpus_per_worker: float | None
    experiment: str
    storage: Path | None
    name: str | None
    max_failures: int


@dataclass(frozen=True)
class RunPlace:
    """Where a run lives: its name and the storage folder that holds it."""

    name: str
    storage: Path

    @property
    def folder(self) -> Path:
        return self.storage / self.name

    @property
    def run_file(self) -> Path:
        return self.folder / MLFLOW_RUN_FILE

    @classmethod
    def of(cls, settings: RunSettings, stem: str, log: str) -> RunPlace:
        """The run's name (`--name`, else `<stem>-<UTC time>`), its storage folder created;
        the console's log kept in the run's folder as `<log>…`."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
        storage = (settings.storage or Path.cwd() / "ray_results").expanduser().resolve()
        storage.mkdir(parents=True, exist_ok=True)
        place = cls(settings.name or f"{stem}-{stamp}", storage)
        console.keep_log(place.folder, log)
        return place


@dataclass(frozen=True)
class OpenRun:
    """The MLflow run a Ray Train run logs to, and the epochs it holds already."""

    run_id: str
    logged: tuple[int, ...] = ()


def resumed_run(client: Any, place: RunPlace, step_metric: str) -> OpenRun | None:
    """The run this name opened before (running again), or None for a new name."""
    if not place.run_file.is_file():
        return None
    run_id = place.run_file.read_text().strip()
    history = client.get_metric_history(run_id, step_metric)
    client.update_run(run_id, status="RUNNING")
    return OpenRun(run_id, tuple(int(m.step) for m in history))


def new_run(
    client: Any,
    place: RunPlace,
    experiment: str,
    tags: Mapping[str, str],
    params: Mapping[str, str],
) -> OpenRun:
    """A new MLflow run named like the Ray Train run, with its tags and params; its id
    written to the run file."""
    run = client.create_run(ensure_experiment(client, experiment), run_name=place.name, tags=tags)
    for key, value in params.items():
        client.log_param(run.info.run_id, key, value)
    place.run_file.parent.mkdir(parents=True, exist_ok=True)
    place.run_file.write_text(run.info.run_id + "\n")
    return OpenRun(run.info.run_id)


def scaling(settings: RunSettings) -> ray.train.ScalingConfig:
    """The workers: `--cpus-per-worker`, else the CPUs but one, shared (0.5 to 4 each) —
    the CPUs of the cluster as it is after losing its largest worker node, so that the
    restarted run still leaves Ray Data a CPU to read with (`cpus_after_a_node_loss`)."""
    if settings.cpus_per_worker is not None:
        per_worker = settings.cpus_per_worker
    else:  # leave a CPU to Ray Data's readers; fractions are fine (2 cores, 1 worker → 1 CPU)
        per_worker = max(0.5, min(4.0, (cpus_after_a_node_loss() - 1) / settings.workers))
    return ray.train.ScalingConfig(
        num_workers=settings.workers,
        use_gpu=settings.gpu,
        resources_per_worker={"CPU": per_worker},
    )


def run_config(
    settings: RunSettings,
    place: RunPlace,
    checkpoints: ray.train.CheckpointConfig,
    logger: ray.train.UserCallback,
) -> ray.train.RunConfig:
    """Ray Train's run: its name and storage, failures to recover from, checkpoints kept,
    the epoch logger."""
    return ray.train.RunConfig(
        name=place.name,
        storage_path=str(place.storage),
        failure_config=ray.train.FailureConfig(max_failures=settings.max_failures),
        checkpoint_config=checkpoints,
        callbacks=[logger],
    )


def fit(trainer: Any) -> ray.train.Result:
    """`trainer.fit()`, then the SIGINT handler the process had before: Ray Train V2 installs
    one that aborts its controller and leaves it behind, so a Ctrl-C in a later stage (the
    evaluation, the pictures, the demo's viewer) would call a controller long gone — and
    start a new Ray to do it — instead of stopping the command."""
    before = signal.getsignal(signal.SIGINT)
    try:
        return trainer.fit()
    finally:
        if before is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, before)


@contextmanager
def finished(
    client: Any,
    run_id: str,
    place: RunPlace,
    forget_on: tuple[type[BaseException], ...] = (),
) -> Iterator[None]:
    """Mark the MLflow run FAILED or FINISHED as the body ends; see the module docstring."""
    try:
        yield
    except BaseException as exc:
        client.set_terminated(run_id, status=RunStatus.to_string(RunStatus.FAILED))
        if forget_on and isinstance(exc, forget_on):
            place.run_file.unlink(missing_ok=True)
        raise
    client.set_terminated(run_id, status="FINISHED")
    place.run_file.unlink(missing_ok=True)
