"""What a Ray worker imports: the modules whose functions and classes Ray unpickles in every
actor (the training loop and its controller callback, the scoring actor, the pretraining
loop) must not bring the driver's run modules, MLflow or plotting with them: each such import
costs every worker process seconds of CPU before it does any work (pipelines.train.loop took
6.9 s with them, 4.5 s without, on this machine)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]

DRIVER_ONLY = (
    "pipelines.train.run",
    "pipelines.train.finish",
    "pipelines.screen.run",
    "pipelines.pretrain.run",
    "pipelines.ingest.run",
)


@pytest.mark.parametrize(
    ("module", "also_absent"),
    [
        ("pipelines.train.loop", ("mlflow", "matplotlib")),
        ("pipelines.train.callback", ("matplotlib",)),
        ("pipelines.pretrain.loop", ("mlflow", "matplotlib", "sklearn")),
        ("pipelines.screen.scoring", ("mlflow", "matplotlib", "sklearn")),
    ],
)
def test_a_worker_module_does_not_import_the_driver(module: str, also_absent: tuple) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        import {module}
        print(sorted(m for m in {DRIVER_ONLY + also_absent!r} if m in sys.modules))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["[]"], f"{module} imports {result.stdout.strip()}"
