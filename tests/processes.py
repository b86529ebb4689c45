"""Process ids of a run, from /proc: what a process started, and which of them still live."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    try:
        for task in (_PROC / str(pid) / "task").iterdir():
            out.update(int(c) for c in (task / "children").read_text().split())
    except OSError:  # gone
        pass
    return out


def descendants(pid: int) -> set[int]:
    """Every process below `pid` now (children, their children, …)."""
    seen: set[int] = set()
    todo = [pid]
    while todo:
        for child in _children(todo.pop()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def command(pid: int) -> str | None:
    try:
        return (_PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return None


def alive(pids: Iterable[int]) -> set[int]:
    """Those of `pids` still running (zombies count as gone)."""
    out = set()
    for pid in pids:
        try:
            state = (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.add(pid)
    return out


def wait_gone(pids: Iterable[int], timeout: float) -> set[int]:
    """Wait up to `timeout` s for `pids` to end; those still alive then."""
    pids = set(pids)
    deadline = time.monotonic() + timeout
    while (left := alive(pids)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def kill_all(pids: Iterable[int]) -> None:
    """SIGKILL by id (a test's cleanup after it has looked)."""
    for pid in alive(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


@dataclass(frozen=True)
class Killed:
    ran: dict[int, str]  # every process below the driver when it was killed: id → command
    left: dict[int, str]  # those still alive `grace` seconds later

    @property
    def had_ray(self) -> bool:
        return any("raylet" in name for name in self.ran.values())


def kill_driver(proc: subprocess.Popen, *, grace: float = 30.0) -> Killed:
    """SIGKILL the driver process alone (as the OOM killer would, not its group), then wait
    for what it started to go; whatever is still alive is SIGKILLed after being noted."""
    ran = {pid: command(pid) or "" for pid in descendants(proc.pid)}
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = wait_gone(ran, timeout=grace)
    shown = {pid: ran[pid] for pid in left}
    kill_all(left)
    return Killed(ran, shown)


def kill_driver_when(
    proc: subprocess.Popen, ready: Callable[[], bool], *, timeout: float, settle: float = 0.0
) -> Killed:
    """Once `ready()` (or after `timeout` s, or when it ended), `settle` s more, then
    `kill_driver(proc)`; its process group is SIGKILLed after, whatever happens."""
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if ready():
                time.sleep(settle)
                break
            time.sleep(0.05)
        return kill_driver(proc)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
