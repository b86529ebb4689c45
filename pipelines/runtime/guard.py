"""A local Ray goes away with the command that started it, even when that command is SIGKILLed.

Ray fate-shares its daemons (GCS, raylet, dashboard) with the driver that started them
(PR_SET_PDEATHSIG), but not everything they start: measured here, after a `mura screen`
driver was SIGKILLed, its `ray::DashboardAgent` and `ray::RuntimeEnvAgent` were still alive
a minute later, and a `ray::MapWorker(…ScreenPredictor)` of 1.2 GB has been seen to stay as
well. On a host that runs nightly from cron, that is a leak per crash.

The recipe:

1. Before `ray.init` starts a local Ray, the driver starts a guard: a small process of its
   own session (so a signal to the driver's process group does not reach it), holding the
   read end of a pipe whose write end only the driver holds.
2. The driver puts a fresh mark (`MURA_RAY_GUARD=<random>`) in its environment while Ray
   starts, and takes it out right after: Ray's processes inherit it (workers from the
   raylet), nothing the driver starts later does.
3. While the driver lives, the guard notes, twice a second, the driver's children that
   carry the mark (GCS, raylet, dashboard, …) and every process below them, by process id
   and start time (so a reused id is never mistaken for one of ours). The mark alone is not
   enough: a process that sets its title (Ray's agents do) may overwrite its environment
   block. The notes alone are not either: a worker started in the last half second, whose
   raylet died with the driver, is found by its mark.
4. When the pipe closes, which the kernel does when the driver exits in any way, SIGKILL
   included, the guard sends SIGTERM to every noted process still alive, every marked one,
   and what they started since, then SIGKILL to whatever is left after a grace period,
   until none is left. A driver that shut Ray down itself leaves little or nothing to do.

Linux only (/proc); elsewhere the guard is not started and Ray's own shutdown is all there
is.
"""

from __future__ import annotations

import os
import secrets
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

MARK = "MURA_RAY_GUARD"
GRACE_S = 3.0  # from SIGTERM to SIGKILL
ROUNDS = 10  # sweeps, for processes started while the first ones stopped
NOTE_EVERY_S = 0.5  # how often the guard notes the processes below the driver
_PROC = Path("/proc")


@dataclass(frozen=True, order=True)
class Proc:
    """A process by id and start time (clock ticks since boot): ids are reused, pairs not."""

    pid: int
    started: int


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time) of a process; None when it is gone."""
    try:
        fields = (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[19])  # fields 3 and 22 of proc(5), counted after the name


def _live(pid: int) -> Proc | None:
    stat = _stat(pid)
    return None if stat is None or stat[0] == "Z" else Proc(pid, stat[1])


def _children(pid: int) -> set[Proc]:
    found: set[Proc] = set()
    try:
        tasks = list((_PROC / str(pid) / "task").iterdir())
    except OSError:
        return found
    for task in tasks:
        with suppress(OSError):
            for child in (task / "children").read_text().split():
                if (proc := _live(int(child))) is not None:
                    found.add(proc)
    return found


def below(pid: int) -> set[Proc]:
    """Every live process below `pid` now (children, their children, …)."""
    found: set[Proc] = set()
    todo = [pid]
    while todo:
        for child in _children(todo.pop()) - found:
            found.add(child)
            todo.append(child.pid)
    return found


def _has_mark(pid: int, mark: str) -> bool:
    try:
        environ = (_PROC / str(pid) / "environ").read_bytes()
    except OSError:  # gone, or not ours to read
        return False
    return f"{MARK}={mark}".encode() in environ.split(b"\0")


def marked(mark: str) -> set[Proc]:
    """Live processes whose environment block still holds `MARK=mark`."""
    pids = [int(e.name) for e in _PROC.iterdir() if e.name.isdigit()]
    return {proc for pid in pids if _has_mark(pid, mark) and (proc := _live(pid)) is not None}


def _still(procs: set[Proc]) -> set[Proc]:
    """Those of `procs` alive, and what they started since (same ids and start times)."""
    alive = {p for p in procs if _live(p.pid) == p}
    for proc in list(alive):
        alive |= below(proc.pid)
    return alive


def _signal_all(procs: set[Proc], sig: signal.Signals) -> None:
    for proc in procs:
        with suppress(ProcessLookupError, PermissionError):
            os.kill(proc.pid, sig)


def sweep(noted: set[Proc], mark: str) -> int:
    """Stop the noted and the marked processes (not this one): SIGTERM, then SIGKILL after
    GRACE_S, for ROUNDS rounds at most. How many were stopped."""
    me = _live(os.getpid())
    stopped: set[Proc] = set()
    for _ in range(ROUNDS):
        targets = _still(noted | marked(mark)) - {me}
        if not targets:
            break
        stopped |= targets
        _signal_all(targets, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        while time.monotonic() < deadline and _still(targets):
            time.sleep(0.1)
        _signal_all(_still(targets), signal.SIGKILL)
        noted |= targets
        time.sleep(0.2)
    return len(stopped)


def _start_guard(mark: str) -> int | None:
    """The guard process (see the module docstring); the write end of its pipe, or None."""
    if not _PROC.is_dir():
        return None
    read, write = os.pipe()
    env = {k: v for k, v in os.environ.items() if k != MARK}
    subprocess.Popen(
        [sys.executable, "-m", "pipelines.runtime.guard", mark],
        stdin=read,
        stdout=subprocess.DEVNULL,  # stderr: the driver's (a bug here shows its traceback)
        env=env,
        start_new_session=True,
        close_fds=True,
    )
    os.close(read)
    return write  # never inherited (os.pipe fds are not), closed only by our exit


_guard_write: int | None = None  # the pipe to this process's guard, while Ray runs


@contextmanager
def guarded_start() -> Iterator[None]:
    """Around starting a local Ray: the processes started inside carry this run's mark."""
    global _guard_write
    release()  # a guard of an earlier local Ray of this process sweeps what it left
    mark = secrets.token_hex(8)
    _guard_write = _start_guard(mark)
    if _guard_write is None:
        yield
        return
    saved = os.environ.get(MARK)
    os.environ[MARK] = mark
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(MARK, None)
        else:
            os.environ[MARK] = saved


def release() -> None:
    """After `ray.shutdown()`: the guard sweeps whatever is left of that Ray, and exits."""
    global _guard_write
    if _guard_write is not None:
        os.close(_guard_write)
        _guard_write = None


def _main(mark: str) -> None:
    driver = os.getppid()
    roots: set[Proc] = set()  # the driver's children that Ray started (they carry the mark)
    noted: set[Proc] = set()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C; we wait for it
    signal.signal(signal.SIGTERM, lambda *_: (sweep(noted, mark), os._exit(0)))
    while True:
        ready, _, _ = select.select([0], [], [], NOTE_EVERY_S)
        if ready and not os.read(0, 1):  # b"": the driver is gone, or shut its Ray down
            break
        roots |= {c for c in _children(driver) - roots if _has_mark(c.pid, mark)}
        now = set(roots).union(*(below(r.pid) for r in roots))
        # kept while alive: noted just after the driver died, `now` may have lost the roots
        noted = {p for p in noted | now if _live(p.pid) == p}
    sweep(noted, mark)


if __name__ == "__main__":
    _main(sys.argv[1])
