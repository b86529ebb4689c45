"""A PACS screening fetches each instance once: scoring, the report's pictures and the
Secondary Captures written back are all made from that one fetch.

Orthanc counts for itself: a Lua `IncomingHttpRequestFilter` appends every HTTP request
(method and URI) to a file. `mura screen dicomweb+http://… --write-back` of a small
archive, with a threshold that flags about half of its studies, must ask WADO-RS for each
source instance exactly once, and still store an SR per study and a Secondary Capture per
image of every flagged study (and a heatmap, made from the same map), with the report
showing the flagged studies' pictures and MLflow the objects stored, counted by kind
(`write_back.*`). The same run tells a worklist each study's finding
by FHIR R4 (`--notify fhir+https://…` to an http.server over TLS with a self-signed
certificate, `--notify-token FILE`): one transaction Bundle per study, validated with
fhir.resources, naming the study's accession number, which goes nowhere else, and the
token, which goes nowhere but the Authorization header. (HL7 v2 over MLLP is told by the
write-back screening of test_pacs.py and by test_pacs_nightly.py.)
"""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest

from jobs.cli import main as mura
from jobs.demo_orthanc import Orthanc, OrthancConfig, start_orthanc
from mura_core.notify.fhir import read_bundle
from mura_core.privacy import ACCESSION, Pseudonymizer, read_reidentify
from mura_core.screen_summary import read_summary
from mura_core.shards import REIDENTIFY_FILE
from mura_core.synth import SynthArchive
from pipelines.screen.config import ScreenConfig
from pipelines.screen.run import run_screen
from tests.conftest import load_into
from tests.pipelines.test_screen import random_bundle
from tests.pipelines.worklist import FHIR_TOKEN as TOKEN
from tests.pipelines.worklist import FhirReceiver

pytestmark = pytest.mark.usefixtures("ray_local")

# Orthanc runs this on every HTTP request it gets: one line, "METHOD URI", per request
LOG_REQUESTS = """
function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
  local f = io.open('{path}', 'a')
  f:write(method .. ' ' .. uri .. '\\n')
  f:close()
  return true
end
"""
WADO_INSTANCE = re.compile(r"^GET /dicom-web/studies/[^/]+/series/[^/]+/instances/([^/]+)$")


class LoggingOrthanc(Orthanc):
    """The test Orthanc, writing down every HTTP request it is asked."""

    @property
    def requests(self) -> Path:
        return self.storage / "requests.log"

    def config(self) -> dict[str, object]:
        script = self.storage / "log-requests.lua"
        script.write_text(LOG_REQUESTS.replace("{path}", str(self.requests)))
        return {**super().config(), "LuaScripts": [str(script)]}

    def retrieved(self) -> Counter[str]:
        """WADO-RS instance retrievals so far, by SOP Instance UID."""
        lines = self.requests.read_text().splitlines() if self.requests.is_file() else []
        return Counter(m.group(1) for line in lines if (m := WADO_INSTANCE.match(line)))


def _instances(root: Path) -> dict[str, str]:
    """The archive's SOP Instance UIDs, and each one's study."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix != ".csv":
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            out[str(ds.SOPInstanceUID)] = str(ds.StudyInstanceUID)
    return out


def test_a_write_back_screening_fetches_each_instance_once(
    orthanc_factory,
    dicom_archive: SynthArchive,
    tmp_path: Path,
    monkeypatch,
    fhir_tls: FhirReceiver,
    token_file: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    server = start_orthanc(OrthancConfig(storage=tmp_path / "pacs"), server=LoggingOrthanc)
    orthanc_factory.track(server)
    assert load_into(server, dicom_archive.root) == dicom_archive.n_images
    instances = _instances(dicom_archive.root)
    bundle = random_bundle(tmp_path / "bundle")
    # the folder gives the same probabilities as the PACS (test_pacs): a threshold at their
    # median flags about half of the studies, without asking the PACS for anything
    folder = run_screen(
        ScreenConfig(
            source=dicom_archive.root, out=tmp_path / "folder", models=(str(bundle),), track=False
        )
    )
    probs = pq.read_table(folder.out / "studies.parquet")["mean_prob"].to_numpy()
    threshold = float(np.median(probs))
    assert not server.retrieved()

    for name, value in server.auth_env.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "report"
    code = mura(
        [
            *("screen", server.dicomweb, "--out", str(out), "--model", str(bundle)),
            *("--threshold", str(threshold), "--write-back"),
            *("--outbox", str(tmp_path / "outbox"), "--notify", fhir_tls.address),
            *("--notify-token", str(token_file), "--notify-outbox", str(tmp_path / "notify")),
            *("--notify-priority", "A", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"),
        ]
    )
    assert code == 0

    retrieved = server.retrieved()
    assert retrieved == Counter(dict.fromkeys(instances, 1))  # each source instance, once
    summary = read_summary(out)
    studies = pq.read_table(out / "studies.parquet").to_pylist()
    flagged = [s for s in studies if s["flagged"]]
    assert 0 < len(flagged) < len(studies) == len(set(instances.values()))
    wb = summary.write_back
    assert wb is not None and not wb.failed and not wb.not_built
    assert (wb.studies, wb.reports) == (len(studies), len(studies))
    assert wb.captures == wb.heatmaps == sum(s["images"] for s in flagged)  # from that fetch too
    assert wb.key_objects == len(flagged) and wb.versions == 0
    assert not summary.picture_failures and not summary.incomplete_studies
    html = (out / "report.html").read_text()
    shown = min(len(flagged), 12)
    assert html.count('alt="CAM overlay') >= shown  # every flagged study's pictures
    assert not (out / ".scores").exists()  # the kept pixels went with the scores
    with sqlite3.connect(tmp_path / "mlflow.db") as con:  # MLflow: the objects, counted
        logged = dict(con.execute("select key, value from metrics where key like 'write_back.%'"))
    views = sum(s["images"] for s in flagged)
    assert logged == {
        **{"write_back.studies": len(studies), "write_back.reports": len(studies)},
        **{"write_back.captures": views, "write_back.heatmaps": views},
        **{"write_back.key_objects": len(flagged), "write_back.versions": 0},
        **{"write_back.failed": 0, "write_back.outbox_pending": 0},
    }

    _told_the_worklist(out, fhir_tls, instances, tmp_path / "mlflow.db")
    printed = capfd.readouterr()
    _secrets_stayed_home(out, tmp_path, token_file, printed.out + printed.err)


def _told_the_worklist(out: Path, fhir: FhirReceiver, instances: dict[str, str], db: Path) -> None:
    """One transaction Bundle per study, with the bearer token, valid FHIR R4 (read back
    with fhir.resources' R4B models): a Device, an Observation and a DiagnosticReport naming
    the ImagingStudy by its StudyInstanceUID and the study's accession number, flagged ones
    at the priority asked; MLflow gets the counts only."""
    studies = {s["study_key"]: s for s in pq.read_table(out / "studies.parquet").to_pylist()}
    accessions = {p: o for k, p, o in read_reidentify(out / REIDENTIFY_FILE) if k == ACCESSION}
    pseudo = Pseudonymizer.from_site()
    told = read_summary(out).notify
    assert told is not None and (told.sent, told.queued, told.pending) == (len(studies), 0, 0)
    assert len(fhir.posts) == len(studies)
    seen = set()
    for post in fhir.posts:
        assert post.path == "/fhir" and post.authorization == f"Bearer {TOKEN}"
        bundle = read_bundle(post.body)  # validates
        assert bundle.type == "transaction"
        device, observation, report = (entry.resource for entry in bundle.entry)
        kinds = [r.get_resource_type() for r in (device, observation, report)]
        assert kinds == ["Device", "Observation", "DiagnosticReport"]
        (study,) = report.imagingStudy
        assert study.type == "ImagingStudy" and study.identifier.system == "urn:dicom:uid"
        uid = study.identifier.value.removeprefix("urn:oid:")
        assert uid in instances.values() and observation.derivedFrom == report.imagingStudy
        key = pseudo(uid, "study")
        (accession,) = [i for i in report.identifier if i.type is not None]
        assert accession.type.coding[0].code == "ACSN" and accession.value == accessions[key]
        flagged = studies[key]["flagged"]
        assert report.meta.tag[0].code == ("A" if flagged else "R")
        assert report.status == observation.status == "preliminary"
        finding = observation.valueCodeableConcept.coding[0].code
        assert finding == ("263654008" if flagged else "17621005")  # Abnormal / Normal
        probability = observation.component[0].valueQuantity.value
        assert abs(float(probability) - studies[key]["mean_prob"]) < 1e-9
        seen.add(key)
    assert seen == studies.keys()
    with sqlite3.connect(db) as con:  # MLflow: the counts, nothing else
        logged = dict(con.execute("select key, value from metrics where key like 'notify.%'"))
    assert logged == {"notify.sent": len(studies)} | dict.fromkeys(
        ("notify.queued", "notify.resent", "notify.pending"), 0
    )


def _secrets_stayed_home(out: Path, work: Path, token_file: Path, printed: str) -> None:
    """The accession numbers reach no report, log or MLflow (only the FHIR server and the
    owner-only map back); the token reaches no file of the run at all (the report, its logs,
    MLflow's store and artifacts, the outboxes) nor the console."""
    accessions = [o for k, _, o in read_reidentify(out / REIDENTIFY_FILE) if k == ACCESSION]
    mlflow = [work / "mlflow.db", *(work / "mlartifacts").rglob("*")]
    written = [out / "summary.json", out / "report.html", *(out / "logs").rglob("*"), *mlflow]
    text = b"".join(p.read_bytes() for p in written if p.is_file())
    assert accessions and not any(a.encode() in text for a in accessions)
    everything = [p for p in work.rglob("*") if p.is_file() and p != token_file]
    assert (work / "mlartifacts").is_dir() and (out / "logs").is_dir()
    assert not any(TOKEN.encode() in p.read_bytes() for p in everything)
    assert TOKEN not in printed
