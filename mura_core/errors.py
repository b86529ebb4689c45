"""The project's one error base: a problem the user can fix, told in one line.

Every module raises a subclass of `MuraError` for whole-run problems a user can act on (a
missing folder, a bad flag value, an unreachable tracking server, a collapsed training run).
The CLI prints those as `mura: error: …` and exits 1. Anything else that escapes is a bug:
the CLI lets it show its traceback, with a hint to report it.
"""

from __future__ import annotations


class MuraError(Exception):
    """A user-fixable problem; `str(error)` is the one line the CLI prints."""


class ConfigError(MuraError, ValueError):
    """A flag or configuration value out of range (also a ValueError, for callers that
    validate values before handing them on)."""
