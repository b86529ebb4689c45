"""Shared fixtures: small synthetic archives (built once per session) and real DICOM data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mura_core.synth import SynthArchive, SynthConfig, synthesize
from tests.shared_data import RADIOGRAPHS_DICOM

REPO = Path(__file__).resolve().parents[1]
SHARED_DICOM = RADIOGRAPHS_DICOM  # ../shared/data, or $MURA_SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _site_secret(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never touch the developer's real ~/.config/mura/site.key."""
    key_dir = tmp_path_factory.mktemp("site-key")
    os.environ["MURA_SITE_KEY_FILE"] = str(key_dir / "site.key")
    os.environ.pop("MURA_SITE_SECRET", None)


@pytest.fixture(scope="session")
def mura_archive(tmp_path_factory: pytest.TempPathFactory) -> SynthArchive:
    """40 studies in MURA-v1.1 layout with its four CSVs (small images: fast)."""
    out = tmp_path_factory.mktemp("mura") / "archive"
    return synthesize(out, SynthConfig(studies=40, seed=7, size=160), workers=1)


@pytest.fixture(scope="session")
def dicom_archive(tmp_path_factory: pytest.TempPathFactory) -> SynthArchive:
    """A synthetic DICOM tree: MONOCHROME1/2, RLE, files without suffix, labels.csv."""
    out = tmp_path_factory.mktemp("dicom") / "archive"
    return synthesize(out, SynthConfig(studies=12, format="dicom", seed=3, size=160), workers=1)


@pytest.fixture(scope="session")
def shared_dicom() -> Path:
    """../shared/data/radiographs-dicom (real CR radiographs), or skip with the reason."""
    if not SHARED_DICOM.is_dir():
        pytest.skip(f"real radiographs not present at {SHARED_DICOM}")
    return SHARED_DICOM


@pytest.fixture(scope="session")
def orthanc_factory(tmp_path_factory: pytest.TempPathFactory):
    """Start real Orthanc PACSes (jobs.demo_orthanc) on free ports; all stopped at the end.
    Skips, saying why, where Orthanc or its DICOMweb plugin is not installed."""
    from jobs.demo_orthanc import OrthancConfig, orthanc_binary, start_orthanc

    if orthanc_binary() is None:
        pytest.skip("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)")
    started = []

    def start(name: str = "pacs"):
        server = start_orthanc(OrthancConfig(storage=tmp_path_factory.mktemp(name)))
        started.append(server)
        return server

    start.track = started.append  # a server a test started itself: stopped at the end too
    yield start
    for server in started:
        server.stop()


def load_into(pacs, root: Path) -> int:
    """Upload every file below `root` that Orthanc accepts; how many it took."""
    return sum(
        pacs.upload(path.read_bytes()) is not None
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.suffix != ".csv"
    )
