"""`mura nightly` from a real Orthanc: only new or changed studies, results written back.

Studies arrive in the PACS in two batches (dated today, as a night's studies are); the
runs screen 6, then 3, then nothing; an image added to an old study makes only that study
change, and its new results get new UIDs. The worklist (`--notify`, hl7apy's MLLPServer) is
down for the first two runs: its notices wait in STATE/notify, and the run with nothing new
delivers them, each control ID once.
"""

from __future__ import annotations

import datetime as dt
import io
from collections import defaultdict
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from mura_core.notify.config import NotifyConfig
from mura_core.pacs.address import PacsAuth
from mura_core.pacs.client import PacsOptions
from mura_core.synth import SynthConfig, synthesize
from pipelines.screen.config import ScreenConfig
from pipelines.screen.nightly import read_ledger, run_nightly
from tests.pipelines.test_screen import random_bundle
from tests.pipelines.worklist import MllpReceiver, free_port

pytestmark = pytest.mark.usefixtures("ray_local")


def _studies(root: Path) -> dict[str, list[pydicom.Dataset]]:
    """The synthetic archive's files by study, each re-dated to today (a night's arrivals)."""
    today = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    out: dict[str, list[pydicom.Dataset]] = defaultdict(list)
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix != ".csv":
            ds = pydicom.dcmread(path)
            ds.StudyDate = today
            out[str(ds.StudyInstanceUID)].append(ds)
    return dict(out)


def _upload(server, datasets: list[pydicom.Dataset]) -> None:
    for ds in datasets:
        assert server.upload(_bytes(ds)) is not None


def _sr_uids(server) -> dict[str, set[str]]:
    """SOP Instance UIDs of the SR series in the PACS, by study (Orthanc's REST index)."""
    out: dict[str, set[str]] = defaultdict(set)
    for orthanc_id in server.get("/instances"):
        tags = server.get(f"/instances/{orthanc_id}/simplified-tags")
        if tags.get("Modality") == "SR":
            out[tags["StudyInstanceUID"]].add(tags["SOPInstanceUID"])
    return dict(out)


def test_nightly_from_a_pacs_screens_new_then_changed_studies_only(
    orthanc_factory, tmp_path: Path
) -> None:
    server = orthanc_factory("nightly-pacs")
    archive = synthesize(
        tmp_path / "archive", SynthConfig(studies=10, format="dicom", seed=11, size=128), workers=1
    )
    studies = _studies(archive.root)
    uids, old = list(studies)[:9], list(studies)[9]
    cfg = ScreenConfig(
        source=server.dicomweb,
        out=tmp_path / "unused",
        models=(str(random_bundle(tmp_path / "bundle", threshold=0.0)),),
        track=False,
        pacs=PacsOptions(auth=PacsAuth(server.cfg.username, server.cfg.password)),
        write_back="",
        notify=NotifyConfig(f"mllp://127.0.0.1:{(port := free_port())}"),  # down, for now
    )
    state = tmp_path / "state"

    _upload(server, [ds for uid in uids[:6] for ds in studies[uid]])
    first = run_nightly(cfg, state)
    assert (first.new, first.unchanged) == (6, 0)
    assert first.report.summary.write_back.studies == 6
    assert (first.report.summary.notify.queued, first.report.summary.notify.pending) == (6, 6)
    _upload(server, [ds for uid in uids[6:] for ds in studies[uid]])
    second = run_nightly(cfg, state)
    assert (second.new, second.unchanged) == (3, 6)
    assert second.report.summary.notify.pending == 9  # recorded in the ledger all the same
    for ds in studies[old]:  # a study from years ago, stored late: outside the window
        ds.StudyDate = "20200101"
    _upload(server, studies[old])
    ris = MllpReceiver(port)  # the worklist is back
    try:
        third = run_nightly(cfg, state)
    finally:
        ris.close()
    assert (third.new, third.unchanged, third.report) == (0, 9, None)
    assert (third.told.resent, third.told.pending) == (9, 0)  # nothing new: the outbox went
    assert len(ris.received.accepted) == len(ris.received.messages) == 9
    assert read_ledger(state).num_rows == 9
    before = _sr_uids(server)
    assert set(before) == set(uids) and all(len(v) == 1 for v in before.values())

    changed = uids[2]
    extra = replace_uids(studies[changed][0])
    _upload(server, [extra])
    fourth = run_nightly(cfg, state)
    assert (fourth.new, fourth.unchanged) == (1, 8)
    assert fourth.report.counts.images == len(studies[changed]) + 1
    after = _sr_uids(server)
    assert {k: v for k, v in after.items() if k != changed} == {
        k: v for k, v in before.items() if k != changed
    }
    assert len(after[changed]) == 2 and before[changed] < after[changed]  # new UIDs beside
    assert run_nightly(cfg, state).new == 0


def replace_uids(ds: pydicom.Dataset) -> pydicom.Dataset:
    """A copy of an image as a new instance of the same study (a late-arriving view)."""
    new = pydicom.dcmread(io.BytesIO(_bytes(ds)))
    new.SOPInstanceUID = new.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    new.SeriesInstanceUID = generate_uid()
    new.SeriesNumber = 7
    return new


def _bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()
