"""The PACS dies while images are being fetched; restarted, the run repeated: every study
ends screened once (in exactly one report, once in the ledger) and with exactly one result
in the PACS — none lost, none twice.

A real Orthanc is SIGKILLed once `mura nightly --write-back` has fetched 8 of its 61 images
(Orthanc itself counts the WADO-RS requests, with a Lua filter); fetches after that fail
(bounded retries) and become `retrieve_failed` rows, their studies are not reported as
screened; results the dead PACS cannot take wait in the outbox. The restarted PACS gets
the outbox first, then the studies not screened yet.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs.demo_orthanc import Orthanc, OrthancConfig, start_orthanc
from mura_core.pacs.address import PacsAuth
from mura_core.pacs.client import PacsOptions, RetryPolicy
from mura_core.privacy import Pseudonymizer
from mura_core.synth import SynthConfig, synthesize
from pipelines.screen.config import ScreenConfig
from pipelines.screen.nightly import REPORTS, read_ledger, run_nightly
from tests.pipelines.test_pacs_nightly import _sr_uids, _studies, _upload
from tests.pipelines.test_screen import random_bundle

pytestmark = [pytest.mark.usefixtures("ray_local"), pytest.mark.slow]


# Orthanc runs this Lua filter on every HTTP request: one byte per WADO-RS instance request
COUNT_FETCHES = """
function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
  if string.sub(uri, 1, 10) == '/dicom-web' and string.find(uri, '/instances/', 1, true) then
    local f = io.open('{path}', 'a')
    f:write('.')
    f:close()
  end
  return true
end
"""


class CountingOrthanc(Orthanc):
    """The test Orthanc, counting the instances it has been asked for (a file grows)."""

    @property
    def fetches(self) -> Path:
        return self.storage / "fetches.log"

    def config(self) -> dict[str, object]:
        config = super().config()
        script = self.storage / "count-fetches.lua"
        script.write_text(COUNT_FETCHES.replace("{path}", str(self.fetches)))
        return {**config, "LuaScripts": [str(script)]}


def _wait_for_fetches(server: CountingOrthanc, n: int, timeout: float = 180.0) -> None:
    """Until the PACS has been asked for `n` instances (fetching under way)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.fetches.is_file() and server.fetches.stat().st_size >= n:
            return
        time.sleep(0.01)
    raise AssertionError("the run never started fetching")


def test_pacs_killed_mid_fetch_then_restarted_every_study_once(
    orthanc_factory, tmp_path: Path
) -> None:
    server = start_orthanc(OrthancConfig(storage=tmp_path / "pacs"), server=CountingOrthanc)
    orthanc_factory.track(server)
    archive = synthesize(
        tmp_path / "archive", SynthConfig(studies=24, format="dicom", seed=5, size=256)
    )
    studies = _studies(archive.root)
    _upload(server, [ds for group in studies.values() for ds in group])
    cfg = ScreenConfig(
        source=server.dicomweb,
        out=tmp_path / "unused",
        models=(str(random_bundle(tmp_path / "bundle")),),
        track=False,
        batch_size=4,
        write_back="",
        pacs=PacsOptions(
            auth=PacsAuth(server.cfg.username, server.cfg.password),
            retry=RetryPolicy(attempts=2, backoff=0.1, timeout=5.0),
        ),
    )
    state = tmp_path / "state"
    runs: dict[str, object] = {}
    worker = threading.Thread(target=lambda: runs.update(first=run_nightly(cfg, state)))
    worker.start()
    _wait_for_fetches(server, 8)  # of 61 images
    server.kill()
    worker.join(timeout=300)
    assert not worker.is_alive()
    first = runs["first"].report.summary
    assert first.incomplete_studies, "the PACS died after every image was fetched"
    quarantine = pq.read_table(
        state / REPORTS / runs["first"].report.out.name / "quarantine.parquet"
    )
    assert "retrieve_failed" in quarantine["error_type"].to_pylist()

    server.restart()
    second = run_nightly(cfg, state)
    assert second.report is not None
    assert run_nightly(cfg, state).new == 0

    pseudo = Pseudonymizer.from_site()
    keys = {pseudo(uid, "study") for uid in studies}
    in_reports = Counter(
        key
        for report in (state / REPORTS).iterdir()
        for key in pq.read_table(report / "studies.parquet")["study_key"].to_pylist()
    )
    assert set(in_reports) == keys and set(in_reports.values()) == {1}
    assert set(read_ledger(state)["study_key"].to_pylist()) == keys
    results = _sr_uids(server)
    assert set(results) == set(studies) and all(len(v) == 1 for v in results.values())
