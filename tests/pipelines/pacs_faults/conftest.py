"""Fixtures of the PACS fault tests: a model, a tracking store per test, `mura` in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pipelines.pacs_faults.cli import PACS_ENV, Mura
from tests.pipelines.test_screen import random_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(random_bundle(tmp_path_factory.mktemp("faults-bundle") / "bundle", size=64))


@pytest.fixture(autouse=True)
def _tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs without --tracking-uri log to a store of their own, not ./mlflow.db."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'default-mlflow.db'}")


@pytest.fixture
def mura(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Mura:
    for name in PACS_ENV:
        monkeypatch.delenv(name, raising=False)
    return Mura(capfd, monkeypatch)
