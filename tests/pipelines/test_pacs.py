"""Screening straight from a real PACS: Orthanc on 127.0.0.1, by DICOMweb and by DIMSE.

The synthetic DICOM archive is loaded into a throwaway Orthanc (HTTP auth on, DICOMweb
plugin, our AE title known to it); screening it through the PACS must give the same study
probabilities as screening the same files from the folder. Written back, every object is
retrieved from Orthanc and read by highdicom: the SRs, Secondary Captures, heatmaps
(Segmentations over the flagged views) and key-object documents; a study screened again
after its instance set changed gets a new SR naming the one it supersedes, and
`mura results` lists the versions newest first.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import highdicom as hd
import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
from hl7apy.parser import parse_message

from jobs.cli import main as mura
from jobs.ohif import start_viewer
from mura_core.errors import ConfigError
from mura_core.locations import PacsInstance
from mura_core.notify.config import NotifyConfig
from mura_core.pacs.address import PacsAuth, PacsQuery
from mura_core.pacs.client import PacsOptions
from mura_core.privacy import ACCESSION, Pseudonymizer, read_reidentify
from mura_core.results import (
    HEATMAP_SERIES_DESCRIPTION,
    HEATMAP_SERIES_NUMBER,
    KOS_SERIES_DESCRIPTION,
    KOS_SERIES_NUMBER,
    SC_SERIES_DESCRIPTION,
    SC_SERIES_NUMBER,
    SR_SERIES_DESCRIPTION,
    ResultObjects,
    SrContent,
    frame_of_reference_uid,
    key_objects,
    own_result_kind,
    read_sr,
)
from mura_core.results.content import HEATMAP_LABEL
from mura_core.results.history import study_history
from mura_core.shards import REIDENTIFY_FILE
from mura_core.synth import SynthArchive
from pipelines.ingest import IngestConfig, run_ingest
from pipelines.screen.config import ScreenConfig
from pipelines.screen.result import ScreenResult
from pipelines.screen.run import run_screen
from tests.cdp import Browser
from tests.conftest import load_into
from tests.ohif import OhifPage, Tour, tour, viewer_or_skip
from tests.pipelines.test_screen import random_bundle
from tests.pipelines.worklist import MllpReceiver

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


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(random_bundle(tmp_path_factory.mktemp("bundle") / "bundle"))


@pytest.fixture(scope="module")
def screened(pacs, dicom_archive: SynthArchive, bundle: str, tmp_path_factory):
    """The same studies screened from the folder, by DICOMweb and by DIMSE."""
    out = tmp_path_factory.mktemp("screened")
    return {
        name: run_screen(
            ScreenConfig(
                source=source, out=out / name, models=(bundle,), track=False, pacs=_options(pacs)
            )
        )
        for name, source in (
            ("folder", dicom_archive.root),
            ("dicomweb", pacs.dicomweb),
            ("dimse", pacs.dimse),
        )
    }


def test_pacs_screening_equals_folder_screening_by_dicomweb_and_dimse(
    screened, dicom_archive: SynthArchive
) -> None:
    folder = _probabilities(screened["folder"].out)
    assert len(folder) == len(dicom_archive.studies)
    for name in ("dicomweb", "dimse"):
        got = _probabilities(screened[name].out)
        assert got.keys() == folder.keys(), name
        assert all(abs(got[k] - folder[k]) <= 1e-6 for k in folder), name
        assert screened[name].counts.images == screened["folder"].counts.images
    # each study's AccessionNumber, by the study's key, in the owner-only map back (so that
    # reads by accession number can be matched), the same from the folder and the PACS
    accessions = {
        name: {(k, p, o) for k, p, o in read_reidentify(r.out / REIDENTIFY_FILE) if k == ACCESSION}
        for name, r in screened.items()
    }
    assert {p for _, p, _ in accessions["folder"]} == folder.keys()
    assert accessions["dicomweb"] == accessions["dimse"] == accessions["folder"]


def _results_in(server) -> dict[str, list[pydicom.Dataset]]:
    """Every result object of ours in the PACS (QIDO for each study's instances, WADO for
    ours), by kind: "sr", "sc", "heatmap", "kos"."""
    client = _options(server).connect(server.dicomweb)
    found: dict[str, list[pydicom.Dataset]] = {"sr": [], "sc": [], "heatmap": [], "kos": []}
    modalities = ("SR", "OT", "SEG", "KO", "DX", "CR")
    for study in client.find_studies(PacsQuery(modalities=modalities)):
        kinds = {
            PacsInstance.of(h): kind
            for h in client.find_instances(study)
            if (
                kind := own_result_kind(
                    h.get("Modality"), h.get("SOPClassUID"), h.get("SeriesDescription"), None
                )
            )
        }
        for loc, data in client.fetch(list(kinds)).items():
            found[kinds[loc]].append(pydicom.dcmread(io.BytesIO(data)))
    return found


def _sources(root: Path) -> dict[str, pydicom.Dataset]:
    """The archive's image headers by SOP Instance UID."""
    headers = (
        pydicom.dcmread(path, stop_before_pixels=True)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.suffix != ".csv"
    )
    return {str(h.SOPInstanceUID): h for h in headers}


def _instance_count(server) -> int:
    return int(server.get("/statistics")["CountInstances"])


def _series_count(server) -> int:
    return int(server.get("/statistics")["CountSeries"])


@pytest.fixture(scope="module")
def ris() -> Iterator[MllpReceiver]:
    """A worklist's HL7 inbox: hl7apy's MLLPServer on 127.0.0.1, acknowledging all."""
    server = MllpReceiver()
    yield server
    server.close()


@dataclass(frozen=True)
class WrittenBack:
    """The PACS screened by DICOMweb with --write-back and --notify (`written_back`)."""

    cfg: ScreenConfig
    result: ScreenResult
    threshold: float
    series_before: int  # Orthanc's series count before the write-back


@pytest.fixture(scope="module")
def written_back(pacs, screened, bundle: str, tmp_path_factory, ris) -> WrittenBack:
    """One write-back screening per module, the threshold the median study probability (so
    about half the studies are flagged): checked below, then looked at in OHIF."""
    probs = _probabilities(screened["dicomweb"].out)
    threshold = float(np.median(list(probs.values())))
    before = _series_count(pacs)
    folder = tmp_path_factory.mktemp("written-back")
    cfg = ScreenConfig(
        source=pacs.dicomweb,
        out=folder / "report",
        models=(bundle,),
        track=False,
        pacs=_options(pacs),
        threshold=threshold,
        write_back="",
        outbox=folder / "outbox",
        notify=NotifyConfig(ris.address, outbox=folder / "notify"),
    )
    return WrittenBack(cfg, run_screen(cfg), threshold, before)


def test_write_back_stores_one_sr_per_study_and_captures_for_flagged_ones_once(
    pacs, written_back: WrittenBack, dicom_archive: SynthArchive, tmp_path: Path, ris: MllpReceiver
) -> None:
    cfg, result, threshold = written_back.cfg, written_back.result, written_back.threshold
    wb = result.summary.write_back
    studies = pq.read_table(result.out / "studies.parquet").to_pylist()
    flagged = {s["study_key"] for s in studies if s["flagged"]}
    assert 0 < len(flagged) < len(studies)
    assert wb is not None and not wb.failed and wb.studies == len(studies)
    results = _results_in(pacs)
    pseudo = Pseudonymizer.from_site()
    by_key = {s["study_key"]: s for s in studies}
    srs = {pseudo(str(ds.StudyInstanceUID), "study"): read_sr(ds) for ds in results["sr"]}
    assert srs.keys() == by_key.keys()
    images = pq.read_table(result.out / "images.parquet").to_pylist()
    for key, sr in srs.items():
        row = by_key[key]
        assert sr.probability == row["mean_prob"] and sr.threshold == threshold
        assert sr.flagged == row["flagged"]
        assert sr.model.version == row["model_version"] and sr.model.name == row["model"]
        mine = {i["image_id"]: i["prob"] for i in images if i["study_key"] == key}
        assert {pseudo(i.sop_instance_uid, "image"): i.probability for i in sr.images} == mine
    sc_studies = {pseudo(str(ds.StudyInstanceUID), "study") for ds in results["sc"]}
    assert sc_studies == flagged
    views = sum(by_key[k]["images"] for k in flagged)
    assert len(results["sc"]) == views
    _heatmaps_and_key_images_name_the_flagged_views(results, _sources(dicom_archive.root))
    assert (wb.reports, wb.captures, wb.heatmaps, wb.key_objects, wb.versions) == (
        len(studies),
        views,
        views,
        len(flagged),
        0,
    )
    series_after = _series_count(pacs)
    # an SR series per study; per flagged study an SC series, a KOS series, one per heatmap
    assert series_after == written_back.series_before + len(studies) + 2 * len(flagged) + views
    instances_after = _instance_count(pacs)

    assert result.summary.notify is not None and result.summary.notify.sent == len(studies)
    assert len(ris.received.accepted) == len(studies)
    _orus_name_each_study(ris, result.out, by_key)

    again = run_screen(replace(cfg, out=tmp_path / "again"))
    rewritten = again.summary.write_back
    assert rewritten.studies == len(studies)
    assert (rewritten.reports, rewritten.versions) == (0, 0)  # its SRs are in the PACS already
    assert _series_count(pacs) == series_after  # same UIDs: nothing new
    assert _instance_count(pacs) == instances_after
    assert {k: len(v) for k, v in _results_in(pacs).items()} == {
        k: len(v) for k, v in results.items()
    }
    told = again.summary.notify  # the same results: the worklist is not told twice
    assert told is not None and (told.sent, told.already_sent) == (0, len(studies))
    assert len(ris.received.messages) == len(studies)


def _orus_name_each_study(ris: MllpReceiver, out: Path, studies: dict[str, dict]) -> None:
    """One valid ORU^R01 (hl7apy's v2.5 model) per study: its OBX names the
    StudyInstanceUID, its OBR the study's accession number and, flagged, the priority asked
    (stat, the default), routine otherwise."""
    accessions = {p: o for k, p, o in read_reidentify(out / REIDENTIFY_FILE) if k == ACCESSION}
    pseudo = Pseudonymizer.from_site()
    told = {}
    for text in ris.received.messages:
        message = parse_message(text)
        assert message.validate()
        order = message.ORU_R01_PATIENT_RESULT.ORU_R01_ORDER_OBSERVATION
        uid = next(
            g.obx.obx_5.to_er7()
            for g in order.children
            if g.name == "ORU_R01_OBSERVATION" and g.obx.obx_3.obx_3_1.to_er7() == "110180"
        )
        told[pseudo(uid, "study")] = (order.obr.obr_3.to_er7(), order.obr.obr_5.to_er7())
    assert told == {k: (accessions[k], "S" if s["flagged"] else "R") for k, s in studies.items()}


def _heatmaps_and_key_images_name_the_flagged_views(
    results: dict[str, list[pydicom.Dataset]], sources: dict[str, pydicom.Dataset]
) -> None:
    """Per flagged study (its SR says so): a BINARY Segmentation (the default) over each
    scored view, at the view's Rows x Columns, in the plane of a Frame of Reference of its own
    (the views have none), and a key-object document naming the views and the SR."""
    srs = {str(ds.StudyInstanceUID): (str(ds.SOPInstanceUID), read_sr(ds)) for ds in results["sr"]}
    views = {
        study: sorted(i.sop_instance_uid for i in sr.images)
        for study, (_, sr) in srs.items()
        if sr.flagged
    }
    mapped: dict[str, list[str]] = {}
    for ds in results["heatmap"]:
        seg = hd.seg.Segmentation.from_dataset(ds)
        assert seg.SegmentationType == "BINARY"
        ((study, series, sop),) = seg.get_source_image_uids()
        source = sources[sop]
        assert (seg.Rows, seg.Columns) == (source.Rows, source.Columns)
        assert "FrameOfReferenceUID" not in source
        assert seg.FrameOfReferenceUID == frame_of_reference_uid(sop)
        assert "PlaneOrientationSequence" in seg.SharedFunctionalGroupsSequence[0]
        assert (study, series) == (str(seg.StudyInstanceUID), str(source.SeriesInstanceUID))
        assert seg.PatientID == source.PatientID
        mapped.setdefault(study, []).append(sop)
    assert {study: sorted(sops) for study, sops in mapped.items()} == views
    named = {}
    for ds in results["kos"]:
        document = hd.ko.KeyObjectSelectionDocument.from_dataset(ds)
        assert document.ConceptNameCodeSequence[0].CodeValue == "113000"  # Of Interest
        named[str(ds.StudyInstanceUID)] = set(key_objects(ds))
    assert named == {study: {*sops, srs[study][0]} for study, sops in views.items()}


def _another_view(server, source: pydicom.Dataset, path: Path, n: int) -> str:
    """Store a new view in `source`'s study (a copy of its file under a new SOP Instance
    UID): the study's instance set changes. Its SOP Instance UID."""
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid(
        entropy_srcs=["test_pacs another view", str(source.SOPInstanceUID), str(n)]
    )
    ds.InstanceNumber = 100 + n
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    assert server.upload(buffer.getvalue()) is not None
    return str(ds.SOPInstanceUID)


def test_a_study_screened_again_gets_an_sr_naming_the_one_it_supersedes(
    orthanc_factory, bundle: str, dicom_archive: SynthArchive, tmp_path: Path, capsys, monkeypatch
) -> None:
    """One study in its own Orthanc: screen it, add a view, screen it again, add another,
    again: the third SR's predecessor is the second, the second's the first; `mura results`
    lists them newest first, by DICOMweb and by DIMSE."""
    paths = {
        str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID): path
        for path in sorted(dicom_archive.root.rglob("*"))
        if path.is_file() and path.suffix != ".csv"
    }
    sources = _sources(dicom_archive.root)
    source = sources[min(sources)]
    study_uid = str(source.StudyInstanceUID)
    pacs = orthanc_factory("versions")
    for sop, path in paths.items():
        if str(sources[sop].StudyInstanceUID) == study_uid:
            assert pacs.upload(path.read_bytes()) is not None
    cfg = ScreenConfig(
        source=pacs.dicomweb,
        out=tmp_path / "v1",
        models=(bundle,),
        track=False,
        pacs=_options(pacs),
        threshold=0.0,  # flagged: its key-object document names each version's views
        write_back="",
        write_back_objects=ResultObjects.parse("sr,kos"),
        outbox=tmp_path / "outbox",
    )
    client = _options(pacs).connect(pacs.dicomweb)
    views = len(client.find_instances(study_uid))
    run_screen(cfg)
    for n in (2, 3):
        _another_view(pacs, source, paths[str(source.SOPInstanceUID)], n)
        wb = run_screen(replace(cfg, out=tmp_path / f"v{n}")).summary.write_back
        assert wb is not None and (wb.reports, wb.versions, wb.key_objects) == (1, 1, 1)

    history = study_history(client, study_uid)
    third, second, first = history.versions
    assert not history.unread and dict(history.objects)["sr"] == 3
    assert third.supersedes == (second.sop_uid,) and second.supersedes == (first.sop_uid,)
    assert first.supersedes == ()
    assert [len(v.content.images) for v in history.versions] == [views + 2, views + 1, views]
    assert [v.key_objects for v in history.versions] == [1, 1, 1]
    assert len({v.content.instance_set_digest for v in history.versions}) == 3

    for name, value in pacs.auth_env.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    for address in (pacs.dicomweb, pacs.dimse):
        assert mura(["results", study_uid, "--pacs", address]) == 0
        printed = capsys.readouterr().out
        assert printed.startswith(f"study {study_uid}: 3 result version(s), newest first")
        order = [printed.index(f"SR {v.sop_uid}") for v in history.versions]
        assert order == sorted(order), printed  # newest first
        assert f"supersedes {second.sop_uid}" in printed and "nothing (first)" in printed
        model = third.content.model
        assert f"{model.name} {model.software_version}  ABNORMAL (flagged)" in printed
        assert f"p = {third.content.probability:.3f} (threshold 0.000)" in printed


def test_ingest_from_a_pacs_accounts_for_every_instance(
    pacs, dicom_archive: SynthArchive, tmp_path: Path
) -> None:
    result = run_ingest(
        IngestConfig(source=pacs.dimse, out=tmp_path / "shards", size=64, pacs=_options(pacs))
    )
    counts = result.manifest.counts
    assert result.manifest.kind == "dimse" and result.manifest.pseudonymized
    assert counts.found == counts.ingested == dicom_archive.n_images
    assert result.manifest.source == pacs.dimse


def test_write_back_to_another_pacs_by_c_store(
    pacs, orthanc_factory, dicom_archive: SynthArchive, tmp_path: Path
) -> None:
    """DEST can be any PACS: results of a DICOMweb source stored by C-STORE elsewhere."""
    other = orthanc_factory("destination")
    cfg = ScreenConfig(
        source=pacs.dicomweb,
        out=tmp_path / "report",
        models=(str(random_bundle(tmp_path / "bundle", threshold=0.0)),),
        track=False,
        pacs=_options(pacs),
        write_back=other.dimse,
        outbox=tmp_path / "outbox",
    )
    wb = run_screen(cfg).summary.write_back
    n = len(dicom_archive.studies)
    assert wb is not None and wb.destination == other.dimse and not wb.failed
    views = dicom_archive.n_images  # all flagged (threshold 0): an SC and a heatmap each
    assert (wb.studies, wb.reports, wb.captures) == (n, n, views)
    assert (wb.heatmaps, wb.key_objects) == (views, n)
    stats = other.get("/statistics")
    assert (stats["CountStudies"], stats["CountInstances"]) == (n, 2 * n + 2 * views)


def test_write_back_needs_a_pacs_source_and_a_pacs_destination(
    pacs, dicom_archive: SynthArchive, tmp_path: Path
) -> None:
    bundle = str(random_bundle(tmp_path / "bundle"))
    base = ScreenConfig(
        source=dicom_archive.root, out=tmp_path / "r", models=(bundle,), track=False
    )
    with pytest.raises(ConfigError, match="source is a folder"):
        run_screen(replace(base, write_back=pacs.dicomweb))
    with pytest.raises(ConfigError, match="not a PACS address"):
        run_screen(replace(base, source=pacs.dicomweb, pacs=_options(pacs), write_back="/tmp/x"))
    assert not list((tmp_path / "r").glob("*.parquet"))  # nothing screened


def _flagged_sr(server) -> tuple[pydicom.Dataset, SrContent]:
    """The SR of the flagged study with the most images, and what it says."""
    read = [(ds, read_sr(ds)) for ds in _results_in(server)["sr"]]
    return max(((ds, c) for ds, c in read if c.flagged), key=lambda pair: len(pair[1].images))


def _two_places(value: float) -> str:
    """A number as OHIF prints a measurement (JavaScript's toFixed(2): ties round up)."""
    return str(Decimal(repr(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _heatmap_seen(server, seen: Tour) -> None:
    """What OHIF drew of the heatmap it opened is that SEG, over the view it was made of:
    one labelmap on the viewport, shown, with as many pixels set as the SEG has (some), its
    segment listed by the segmentation panel."""
    (drawn,) = seen.heatmap
    assert drawn["visible"] and drawn["label"] == HEATMAP_SERIES_DESCRIPTION, drawn
    assert drawn["segments"] == seen.segments == [HEATMAP_LABEL], (drawn, seen.segments)
    stored = {str(ds.SeriesInstanceUID): ds for ds in _results_in(server)["heatmap"]}
    seg = hd.seg.Segmentation.from_dataset(stored[drawn["series"]])
    ((_, _, sop),) = seg.get_source_image_uids()
    assert drawn["image"] == sop, drawn
    assert drawn["labelled"] == np.count_nonzero(seg.pixel_array) > 0, drawn


@pytest.mark.slow
def test_seen_in_ohif_the_images_our_sr_the_secondary_captures_and_a_heatmap(
    pacs, written_back: WrittenBack, tmp_path: Path
) -> None:
    """A flagged study after the write-back, in OHIF Viewer v3 (jobs.ohif serving it against
    this Orthanc) in headless Chromium: its first image is drawn, the study browser lists
    our SR series, the SC series with one capture per image, the KOS series and a heatmap
    series per image; an SC opens, the SR draws the finding, probability, threshold and
    model over the image, and a heatmap opens over its view (`_heatmap_seen`). The
    screenshots land in tmp_path (and in $MURA_OHIF_SHOTS: docs/img)."""
    dist = viewer_or_skip()
    ds, sr = _flagged_sr(pacs)
    auth = PacsAuth(pacs.cfg.username, pacs.cfg.password)
    with start_viewer(pacs.dicomweb, auth, dist=dist) as viewer, Browser.launch() as browser:
        seen = tour(OhifPage(browser.page(), tmp_path), viewer.study_url(str(ds.StudyInstanceUID)))
    assert any(SR_SERIES_DESCRIPTION in s for s in seen.series), seen.series
    captures = f"{SC_SERIES_DESCRIPTION} | S:{SC_SERIES_NUMBER} | {len(sr.images)}"
    assert any(captures in s for s in seen.series), seen.series
    heatmaps = f"SEG | {HEATMAP_SERIES_DESCRIPTION} | S:{HEATMAP_SERIES_NUMBER} | 1"
    assert sum(s == heatmaps for s in seen.series) == len(sr.images), seen.series
    assert any(f"KO | {KOS_SERIES_DESCRIPTION} | S:{KOS_SERIES_NUMBER}" in s for s in seen.series)
    assert SC_SERIES_DESCRIPTION in seen.capture
    assert f"Abnormal (AI: {sr.model.label}): " in seen.drawn, seen.drawn
    assert f"Probability: {_two_places(sr.probability)} 1" in seen.drawn, seen.drawn
    assert f"Threshold Value: {_two_places(sr.threshold)} 1" in seen.drawn, seen.drawn
    _heatmap_seen(pacs, seen)
    assert [p.name for p in seen.shots] == [
        "ohif_study.png",
        "ohif_sc.png",
        "ohif_sr.png",
        "ohif_heatmap.png",
    ]
