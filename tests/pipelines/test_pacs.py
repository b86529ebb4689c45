"""Screening straight from a real PACS: Orthanc on 127.0.0.1, by DICOMweb and by DIMSE.

The synthetic DICOM archive is loaded into a throwaway Orthanc (HTTP auth on, DICOMweb
plugin, our AE title known to it); screening it through the PACS must give the same study
probabilities as screening the same files from the folder.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mura_core.pacs.address import PacsAuth
from mura_core.pacs.client import PacsOptions
from mura_core.synth import SynthArchive
from pipelines.screen import ScreenConfig, run_screen
from tests.conftest import load_into
from tests.pipelines.test_screen import random_bundle

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def pacs(orthanc_factory, dicom_archive: SynthArchive):
    server = orthanc_factory("pacs")
    assert load_into(server, dicom_archive.root) == dicom_archive.n_images
    return server


def _options(server) -> PacsOptions:
    return PacsOptions(auth=PacsAuth(server.cfg.username, server.cfg.password))


def _probabilities(out: Path) -> dict[str, float]:
    table = pq.read_table(out / "studies.parquet")
    return dict(zip(table["study_key"].to_pylist(), table["mean_prob"].to_pylist(), strict=True))


def test_pacs_screening_equals_folder_screening_by_dicomweb_and_dimse(
    pacs, dicom_archive: SynthArchive, tmp_path: Path
) -> None:
    bundle = str(random_bundle(tmp_path / "bundle"))
    results = {}
    for name, source in (
        ("folder", dicom_archive.root),
        ("dicomweb", pacs.dicomweb),
        ("dimse", pacs.dimse),
    ):
        cfg = ScreenConfig(
            source=source,
            out=tmp_path / name,
            models=(bundle,),
            track=False,
            pacs=_options(pacs),
        )
        results[name] = run_screen(cfg)
    folder = _probabilities(tmp_path / "folder")
    assert len(folder) == len(dicom_archive.studies)
    for name in ("dicomweb", "dimse"):
        got = _probabilities(tmp_path / name)
        assert got.keys() == folder.keys(), name
        assert all(abs(got[k] - folder[k]) <= 1e-6 for k in folder), name
        assert results[name].counts.images == results["folder"].counts.images
