"""Progress of work done in Ray workers, drawn on the driver's console.

Decoding tasks and training workers run in other processes (on a cluster, other machines),
and their own output goes to the log. They report progress as small `Tick`s into a Ray
`Queue` (Ray's actor-backed queue, reserving no CPU, on the driver's node); a thread on the
driver drains it a few times a second and moves the console's bar, or prints a finished
stage's line. A
`ProgressSink` is what a worker holds: picklable, and it never blocks work for long (a full
queue or a lost driver drops the tick).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pipelines.runtime.console import Bar, console

POLL_S = 0.25


@dataclass(frozen=True)
class Tick:
    """`stage` moved to `done` (absolute) or by `add` (relative) of `total`; or, with
    `line`, a finished stage's line to print."""

    stage: str = ""
    done: int | None = None
    add: int = 0
    total: int | None = None
    unit: str = "images"
    line: str | None = None


class ProgressSink:
    """The workers' end: `tick` and `line` put a Tick into the driver's queue."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue

    def _put(self, tick: Tick) -> None:
        # fire and forget (no round trip per tick); progress must never fail the work
        with contextlib.suppress(Exception):
            self._queue.actor.put_nowait.remote(tick)

    def tick(self, stage: str, done: int, total: int | None, *, unit: str = "images") -> None:
        self._put(Tick(stage=stage, done=done, total=total, unit=unit))

    def advance(self, stage: str, n: int, total: int | None, *, unit: str = "images") -> None:
        self._put(Tick(stage=stage, add=n, total=total, unit=unit))

    def line(self, text: str) -> None:
        self._put(Tick(line=text))


class _Drawer:
    """Driver side: turns ticks into bars and lines on the console."""

    def __init__(self, summary: bool) -> None:
        self.bars: dict[str, Bar] = {}
        self.summary = summary

    def apply(self, tick: Tick) -> None:
        if tick.line is not None:
            console.print(tick.line)
            return
        bar = self.bars.get(tick.stage)
        if bar is None or bar.closed:
            for other in self.bars.values():
                other.close()
            bar = self.bars[tick.stage] = console.progress(
                tick.stage, tick.total, tick.unit, summary=self.summary
            )
        bar.update(tick.done if tick.done is not None else bar.done + tick.add)
        if bar.total and bar.done >= bar.total:
            bar.close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


@contextlib.contextmanager
def progress_feed(
    *, summary: bool = True, expect: tuple[str, int, str] | None = None
) -> Iterator[ProgressSink]:
    """A queue for the block's workers to report into, drawn until the block ends.
    `summary=False`: bars print no closing line when the console is not a terminal (the
    stage prints its own line, e.g. each training epoch's metrics). `expect` = (stage,
    total, unit) draws that stage's bar from the start, so its rate counts from there."""
    import ray
    from ray.util.queue import Empty, Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # on the driver's own node: a node that dies takes its progress with it, and a lost
    # queue would silence every later line (a worker that failed, the epochs after it)
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    queue = Queue(maxsize=10_000, actor_options={"num_cpus": 0, "scheduling_strategy": here})
    drawer, stop = _Drawer(summary), threading.Event()
    if expect is not None:
        drawer.apply(Tick(stage=expect[0], done=0, total=expect[1], unit=expect[2]))

    def drain() -> None:
        with contextlib.suppress(Empty):
            for tick in queue.get_nowait_batch(queue.qsize()):
                drawer.apply(tick)

    def loop() -> None:
        while not stop.wait(POLL_S):
            with contextlib.suppress(Exception):
                drain()

    thread = threading.Thread(target=loop, name="mura-progress", daemon=True)
    thread.start()
    try:
        yield ProgressSink(queue)
    finally:
        stop.set()
        thread.join()
        with contextlib.suppress(Exception):
            drain()
        drawer.close()
        with contextlib.suppress(Exception):
            queue.shutdown()
