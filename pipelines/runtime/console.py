"""The user's console: what a command says, kept apart from what Ray says.

A command prints a few lines and a progress bar per long stage; Ray prints a great deal
(its own warnings, every worker's output, C++ core-worker logs). `Console.capture` points the
process's stdout and stderr — file descriptors 1 and 2, so C++ output, Python warnings, Ray's
worker-log forwarding and every child process it starts are all caught — at a log file, and
keeps private copies of the terminal for the console's own lines. The log starts in the
system temp folder (owner-only) and moves beside the run's output once the command knows
where that is (`keep_log`); its path is printed once. `--verbose` (or MURA_VERBOSE=1) skips
the capture, so Ray's output stays on the terminal as before.

Bars redraw in place on a terminal; in a pipe or a file they print one line when done, so a
log of a run stays short.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

VERBOSE_ENV = "MURA_VERBOSE"
REDRAW_S = 0.2


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds}s"


@dataclass
class Bar:
    """One stage's progress: counts, rate and ETA. `update(done)` sets the count."""

    console: Console
    label: str
    total: int | None
    unit: str
    summary: bool = True  # print the closing line when not on a terminal
    done: int = 0
    started: float = field(default_factory=time.perf_counter)
    drawn: float = 0.0
    closed: bool = False

    def update(self, done: int) -> None:
        self.done = done
        now = time.perf_counter()
        if self.console.tty and now - self.drawn >= REDRAW_S:
            self.drawn = now
            self.console.draw("\r" + self.text() + "\x1b[K")

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def text(self) -> str:
        elapsed = time.perf_counter() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        count = f"{self.done:,}" + (f"/{self.total:,}" if self.total else "")
        parts = [f"{self.label}: {count} {self.unit}"]
        if self.total:
            width = 20
            filled = int(width * min(self.done, self.total) / self.total)
            parts.insert(1, "|" + "#" * filled + "." * (width - filled) + "|")
        parts.append(f"{rate:,.1f}/s")
        if self.closed:
            parts.append(f"in {_duration(elapsed)}")
        elif self.total and rate > 0:
            parts.append(f"ETA {_duration((self.total - self.done) / rate)}")
        return " ".join(parts)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.console.tty:
            self.console.draw("\r" + self.text() + "\x1b[K\n")
        elif self.summary:
            self.console.draw(self.text() + "\n")
        if self.console.bar is self:
            self.console.bar = None


class Console:
    """Where a command's own output goes: the terminal, even while Ray's goes to a log."""

    def __init__(self) -> None:
        self._terminal: tuple[TextIO, TextIO] | None = None  # while capturing
        self.bar: Bar | None = None
        self.log: Path | None = None
        self.verbose = os.environ.get(VERBOSE_ENV, "") not in ("", "0")

    @property
    def out(self) -> TextIO:
        """The terminal's stdout while capturing, else whatever sys.stdout is now."""
        return self._terminal[0] if self._terminal else sys.stdout

    @property
    def err(self) -> TextIO:
        return self._terminal[1] if self._terminal else sys.stderr

    @property
    def tty(self) -> bool:
        return self.err.isatty()

    def print(self, *parts: object) -> None:
        """A line (or several) on stdout, above any bar in progress."""
        self._clear_bar()
        print(*parts, file=self.out, flush=True)
        self._redraw_bar()

    def note(self, text: str) -> None:
        """A line on stderr (hints, the log's path), above any bar in progress."""
        self._clear_bar()
        print(text, file=self.err, flush=True)
        self._redraw_bar()

    def draw(self, text: str) -> None:
        self.err.write(text)
        self.err.flush()

    def progress(self, label: str, total: int | None, unit: str, *, summary: bool = True) -> Bar:
        """A new bar (closing the previous one)."""
        if self.bar is not None:
            self.bar.close()
        self.bar = Bar(self, label, total, unit, summary=summary)
        self.bar.update(0)
        return self.bar

    def _clear_bar(self) -> None:
        if self.bar is not None and self.tty and self.bar.drawn:
            self.draw("\r\x1b[K")

    def _redraw_bar(self) -> None:
        if self.bar is not None and self.tty and self.bar.drawn:
            self.draw(self.bar.text())

    @contextlib.contextmanager
    def capture(self, command: str) -> Iterator[None]:
        """Send fds 1 and 2 (everything Ray and its children print) to a log file while the
        block runs; the console keeps the terminal. Restored afterwards (for in-process use:
        tests, notebooks); a CLI process simply exits."""
        if self.verbose:
            yield
            return
        fd, name = tempfile.mkstemp(prefix=f"mura-{command}-", suffix=".log")  # 0600
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        terminal = (
            os.fdopen(os.dup(saved[0]), "w", buffering=1),
            os.fdopen(os.dup(saved[1]), "w", buffering=1),
        )
        self._terminal = terminal
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        self.log = Path(name)
        try:
            yield
        finally:
            # the log's disk may be full: what cannot be flushed is lost, the terminal is not
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError):
                    stream.flush()
            if self.bar is not None:
                self.bar.close()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            self._terminal = None
            for handle in terminal:
                handle.close()
            for fd in saved:
                os.close(fd)
            self._forget_empty_log()

    def _forget_empty_log(self) -> None:
        """A log left in the temp folder (the command never said where its output goes, or
        failed before): removed when empty, else its path is told."""
        if self.log is not None and self.log.parent == Path(tempfile.gettempdir()):
            with contextlib.suppress(OSError):
                if self.log.stat().st_size == 0:
                    self.log.unlink()
                else:
                    self.note(f"Ray's logs: {self.log}")
        self.log = None

    def keep_log(self, folder: Path, command: str) -> None:
        """Move the capture log to `folder/logs/` (once) and say where it is."""
        if self.log is None or self.log.parent != Path(tempfile.gettempdir()):
            return
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        target = folder / "logs" / f"{command}-{stamp}.log"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(self.log, target)  # same file system: fds 1 and 2 keep writing to it
        except OSError:
            shutil.copyfile(self.log, target)
            fd = os.open(target, os.O_WRONLY | os.O_APPEND)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
            self.log.unlink()
        self.log = target
        self.note(f"Ray's logs: {target} (--verbose shows them here)")


console = Console()
