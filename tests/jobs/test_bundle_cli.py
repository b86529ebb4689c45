"""`mura screen` with a model bundle that is not safe or not sane: one `mura: error:` line
that names the refused file, exit 1, no traceback, no advice to load it unsafely, and the
command it carries never run. Real subprocesses of the CLI on a small synthetic archive; the
model is checked before Ray starts, so each run takes seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mura_core.checkpoints import MODEL_JSON, WEIGHTS, save_bundle
from mura_core.model_info import ModelInfo
from mura_core.models import build_model
from mura_core.synth import SynthConfig, synthesize
from tests.mura_core.test_bundles import write_malicious

SIZE = 32


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle-cli") / "archive"
    synthesize(out, SynthConfig(studies=2, seed=5, size=64), workers=1)
    return out


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    info = ModelInfo(model="cnn", size=SIZE, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return save_bundle(tmp_path.resolve() / "bundle", build_model("cnn", size=SIZE), info)


def _screen(archive: Path, bundle: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", "screen", str(archive), "--model", str(bundle)]
        + ["--out", str(tmp_path / "out"), "--gpus", "0"]
        + ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        timeout=300,
    )


def _one_line(result: subprocess.CompletedProcess[str], refused: Path) -> str:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mura: error: "), result.stderr
    assert str(refused) in lines[0] and "refused" in lines[0], lines[0]
    assert "weights_only=False" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert "Ray" not in result.stdout + result.stderr  # refused before Ray starts
    return lines[0]


def test_screen_refuses_a_weights_file_carrying_code(
    archive: Path, bundle: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    write_malicious(bundle / WEIGHTS, marker)
    line = _one_line(_screen(archive, bundle, tmp_path), bundle / WEIGHTS)
    assert "pickle carrying code or objects" in line and "nothing in it was run" in line, line
    assert not marker.exists()
    torch.load(bundle / WEIGHTS, weights_only=False)  # control: the file does carry the code
    assert marker.exists()


def test_screen_refuses_a_model_json_size_of_20000(
    archive: Path, bundle: Path, tmp_path: Path
) -> None:
    data = json.loads((bundle / MODEL_JSON).read_text())
    (bundle / MODEL_JSON).write_text(json.dumps({**data, "size": 20000}))
    line = _one_line(_screen(archive, bundle, tmp_path), bundle / MODEL_JSON)
    assert line.endswith("refused: size 20000 is not an integer within 16..2048"), line
