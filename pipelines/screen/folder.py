"""The report folder OUT: what marks it ours, the check that it may be used, its claim.

The recipe, top to bottom: `check_out` (OUT new, empty or a report of ours, and writable:
checked without writing anything) → `claim` (OUT created with its marker `.mura-report`,
locked for the whole run: a second run into the same OUT fails at once with one line and
changes nothing). `summary.json` (`SUMMARY`), written last by a run, marks the report
complete; `mura nightly` marks and recognises its reports with the same names.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from mura_core.outputs import check_writable, claimed, is_empty
from mura_core.screen_summary import SUMMARY_FILE
from pipelines.screen.config import ScreenError

MARKER = ".mura-report"
MARKER_TEXT = "mura screening report\n"
SUMMARY = SUMMARY_FILE


def check_out(out: Path) -> Path:
    """OUT must be new, empty, or a report of ours (replaced), and writable: checked
    without writing anything (`claim` creates it once every check has passed)."""
    out = out.expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ScreenError(f"output {out} exists and is not a folder")
    if out.is_dir() and not is_empty(out) and not (out / MARKER).is_file():
        raise ScreenError(
            f"output {out} is not empty and holds no screening report: choose a new or "
            "empty folder (nothing is overwritten)"
        )
    check_writable(out, ScreenError)
    return out


def claim(out: Path) -> contextlib.AbstractContextManager[Path]:
    """OUT created with its marker and locked for the block (a second run: one line)."""
    return claimed(out, MARKER, MARKER_TEXT, "mura screen run", ScreenError)
