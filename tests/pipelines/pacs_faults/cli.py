"""Running `mura` in-process for the PACS fault tests, and reading what it said and wrote."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobs.cli import main as cli

PACS_ENV = ("MURA_PACS_USERNAME", "MURA_PACS_PASSWORD", "MURA_PACS_TOKEN")


@dataclass(frozen=True)
class Said:
    rc: int
    out: str
    err: str


@dataclass(frozen=True)
class Mura:
    """`mura ARGV` in this process, its stdout/stderr captured at the file descriptors;
    `env` is the test's environment, which starts with no MURA_PACS_* variable set."""

    capfd: pytest.CaptureFixture[str]
    env: pytest.MonkeyPatch

    def __call__(self, *argv: str, env: Mapping[str, str] | None = None) -> Said:
        for key, value in (env or {}).items():
            self.env.setenv(key, value)
        try:
            rc = cli(list(argv))
        finally:
            for key in env or {}:
                self.env.delenv(key)
        captured = self.capfd.readouterr()
        return Said(rc, captured.out, captured.err)


def one_error_line(said: Said, *, secrets: tuple[str, ...] = ()) -> str:
    """Exit 1, and stderr is exactly one line `mura: error: …` holding none of `secrets`."""
    lines = said.err.strip().splitlines()
    assert said.rc == 1, said
    assert len(lines) == 1 and lines[0].startswith("mura: error: "), lines
    for secret in secrets:
        assert secret not in said.err and secret not in said.out
    return lines[0]


def private_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*")) if folder.exists() else []


def mlflow_runs(db: Path) -> int:
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(db)) as con:
        return int(con.execute("SELECT count(*) FROM runs").fetchone()[0])
