"""A PACS holding junk as well as images, through the `mura` CLI and a real Orthanc.

1. The junk: the synthetic DICOM tree, the real radiographs of
   ../shared/data/radiographs-dicom, every file of pydicom's test data Orthanc accepts, and
   misfiled copies (a photo, UIDs holding '/' and '@'). Every instance Orthanc holds ends
   in exactly one place — scored, quarantined with its reason, skipped and counted
   (non-image, other modality, unusable UID), or in a study not listed (the modality filter
   does not match it, or no request can name it) — by DICOMweb and by DIMSE; nothing crashes.
2. Privacy: no identifier, password or `user:password` base64 reaches MLflow, the report
   (except reidentify.csv) or the run's logs.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import logging
import re
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pydicom.data
import pytest
from pydicom.uid import UID, generate_uid

from jobs.demo_orthanc import Orthanc
from mura_core.synth import SynthArchive
from tests.conftest import load_into
from tests.pipelines.pacs_faults.cli import Mura, Said, private_file
from tests.pipelines.test_screen import REPORT_FILES, random_bundle
from tests.readable import readable

pytestmark = pytest.mark.usefixtures("ray_local")

# the modalities of pydicom's test files, less NM and ECG: those studies are not listed
MODALITIES = ("CR", "DX", "CT", "MR", "OT", "US", "SR", "SEG", "RTDOSE", "RTPLAN", "RTSTRUCT")
# pydicom-data's 120-frame JPEG: 4 s a decode here, and each batch holding some of its frames
# fetches and decodes all 120 (a minute of a 2-core run); the wheel's multi-frame files stay
TOO_SLOW = {"color3d_jpeg_baseline.dcm"}


# --- 1. a PACS holding junk as well as images --------------------------------------------


@dataclass(frozen=True)
class Held:
    """One instance as Orthanc's own REST API describes it (not through QIDO or C-FIND)."""

    study: str
    series: str
    sop: str
    modality: str
    sop_class: str
    frames: int
    identifiers: tuple[str, ...]


@dataclass(frozen=True)
class Junk:
    server: Orthanc
    synthetic: frozenset[str]  # SOP Instance UIDs of the synthetic tree
    shared: dict[str, str]  # SOP Instance UID → file name, ../shared/data/radiographs-dicom
    pydicom_files: int  # files of pydicom's test data (wheel + pydicom-data)
    pydicom_accepted: int  # … that Orthanc stored (or already held)
    wheel_files: int
    wheel_accepted: int


def _sop(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True, force=True).SOPInstanceUID)


# copies of a synthetic radiograph, each in a series of its own, that a PACS may well hold:
MISFILED = (
    {"Modality": "XC"},  # a camera photo in a radiograph study: skipped as another modality
    {"SOPInstanceUID": "2.25.4242/1"},  # a UID no WADO-RS URL or PacsInstance can hold: skipped
    {"StudyInstanceUID": "2.25.4242@2"},  # … a study's: never listed, noted
)


def _misfiled(path: Path, changes: dict[str, str]) -> bytes:
    ds = pydicom.dcmread(path)
    salt = repr(changes)
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[str(ds.SeriesInstanceUID), salt])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[str(ds.SOPInstanceUID), salt])
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def junk(orthanc_factory, dicom_archive: SynthArchive, shared_dicom: Path) -> Junk:
    server = orthanc_factory("junk-pacs")
    assert load_into(server, dicom_archive.root) == dicom_archive.n_images
    assert load_into(server, shared_dicom) == len(list(shared_dicom.glob("*.dcm")))
    files = sorted(
        path
        for path in map(Path, pydicom.data.get_testdata_files())
        if path.is_file() and path.name not in TOO_SLOW
    )
    wheel_root = Path(pydicom.data.__file__).parent
    accepted = {f for f in files if server.upload(f.read_bytes()) is not None}
    wheel = [f for f in files if f.is_relative_to(wheel_root)]
    tree = [p for p in dicom_archive.root.rglob("*") if p.is_file() and p.suffix != ".csv"]
    assert all(server.upload(_misfiled(min(tree), c)) is not None for c in MISFILED)
    synthetic = frozenset(_sop(p) for p in tree)
    return Junk(
        server=server,
        synthetic=synthetic,
        shared={_sop(p): p.name for p in shared_dicom.glob("*.dcm")},
        pydicom_files=len(files),
        pydicom_accepted=len(accepted),
        wheel_files=len(wheel),
        wheel_accepted=len(accepted.intersection(wheel)),
    )


def _frames(text: str | None) -> int:
    """NumberOfFrames as the listing reads it (one of pydicom's RT Dose files says '1A')."""
    return max(1, int(text)) if text and text.strip().isdigit() else 1


def held(server: Orthanc) -> list[Held]:
    studies = {s["ID"]: s for s in server.get("/studies?expand")}
    series = {s["ID"]: s for s in server.get("/series?expand")}
    out = []
    for inst in server.get("/instances?expand"):
        se = series[inst["ParentSeries"]]
        st = studies[se["ParentStudy"]]
        meta = server.get(f"/instances/{inst['ID']}/metadata?expand")
        tags = {
            **st["PatientMainDicomTags"],
            **st["MainDicomTags"],
            **se["MainDicomTags"],
            **inst["MainDicomTags"],
        }
        keys = ("PatientName", "PatientID", "AccessionNumber")
        uids = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
        out.append(
            Held(
                study=tags["StudyInstanceUID"],
                series=tags["SeriesInstanceUID"],
                sop=tags["SOPInstanceUID"],
                modality=str(tags.get("Modality", "")).upper(),
                sop_class=meta.get("SopClassUid", ""),
                frames=_frames(tags.get("NumberOfFrames")),
                identifiers=tuple(str(tags[k]) for k in (*keys, *uids) if tags.get(k)),
            )
        )
    return out


@dataclass(frozen=True)
class Expected:
    """Where each instance Orthanc holds should end, for a modality filter."""

    studies: int  # studies listed: the filter matches, and their UID can be named
    unnamable: int  # studies the filter matches whose UID no request can name
    images: int  # instances to screen
    rows: Counter[str]  # SOP Instance UID → report rows (one per frame), for images to screen
    skipped: Counter[str]  # kind → instances listed but never fetched
    unlisted: int  # instances in studies not listed


def _nameable(uid: str) -> bool:
    return re.fullmatch(r"[0-9A-Za-z._-]+", uid) is not None


def expect(instances: list[Held], modalities: tuple[str, ...]) -> Expected:
    matched = {h.study for h in instances if h.modality in modalities}
    listed = {study for study in matched if _nameable(study)}
    rows: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    images = 0
    for h in instances:
        if h.study not in listed:
            continue
        name = UID(h.sop_class).name
        if not (_nameable(h.series) and _nameable(h.sop)):
            skipped["unusable UID"] += 1
        elif "Image Storage" not in name:
            skipped[f"non-image {name}"] += 1
        elif h.modality not in modalities:
            skipped[f"modality {h.modality or 'none'}"] += 1
        else:
            rows[h.sop] += h.frames
            images += 1
    unlisted = sum(h.study not in listed for h in instances)
    return Expected(len(listed), len(matched - listed), images, rows, skipped, unlisted)


def _skipped_note(text: str) -> Counter[str]:
    """The listing's `skipped, never fetched: kind n, kind n` note, as a Counter."""
    line = next(ln for ln in text.splitlines() if "skipped, never fetched: " in ln)
    items = line.split("skipped, never fetched: ", 1)[1].split(", ")
    return Counter({k: int(n) for k, n in (item.rsplit(" ", 1) for item in items)})


@dataclass(frozen=True)
class Outcome:
    scored: dict[str, float]  # image (SOP UID, `#frame` for multi-frame) → probability
    quarantined: dict[str, tuple[str, str]]  # image → (error_type, reason)


def outcome(out: Path) -> Outcome:
    """The report's rows, mapped back to SOP Instance UIDs through reidentify.csv."""
    with (out / "reidentify.csv").open() as f:
        real = {row["pseudonym"]: row["original"] for row in csv.DictReader(f)}
    images = pq.read_table(out / "images.parquet").to_pylist()
    problems = pq.read_table(out / "quarantine.parquet").to_pylist()
    scored = {real[r["image_id"]]: r["prob"] for r in images}
    quarantined = {real[r["image_id"]]: (r["error_type"], r["reason"]) for r in problems}
    assert len(scored) == len(images) and len(quarantined) == len(problems)
    assert not scored.keys() & quarantined.keys()
    return Outcome(scored, quarantined)


def _per_instance(images: object) -> Counter[str]:
    return Counter(str(i).split("#", 1)[0] for i in images)


def check_every_instance_accounted_for(
    junk: Junk, said: Said, out: Path, address: str, expected: Expected
) -> Outcome:
    assert said.rc == 0, said.err[-3000:]
    assert f"{expected.studies} studies matched modality {'/'.join(MODALITIES)} at {address}" in (
        said.out
    )
    assert _skipped_note(said.out) == expected.skipped
    assert f"skipped {expected.unnamable} more whose StudyInstanceUID" in said.out
    result = outcome(out)
    assert _per_instance([*result.scored, *result.quarantined]) == expected.rows
    assert expected.images + sum(expected.skipped.values()) + expected.unlisted == (
        junk.server.instance_count()
    )
    # what the synthetic tree and the real radiographs must come to
    assert junk.synthetic <= result.scored.keys()
    for sop, name in junk.shared.items():
        if "JPLY" in name:  # 12-bit JPEG extended: no installed plugin decodes it
            assert result.quarantined[sop][0] == "unsupported_transfer_syntax", name
            assert "JPEG Extended" in result.quarantined[sop][1]
        else:
            assert sop in result.scored, name
    # quarantined with a reason, and no decoder bug behind any of them
    assert all(t and reason for t, reason in result.quarantined.values())
    assert not [q for q in result.quarantined.values() if q[0] == "imaging_error"]
    return result


def tally(result: Outcome) -> Counter[str]:
    return Counter(t for t, _ in result.quarantined.values())


@pytest.mark.slow
def test_a_pacs_holding_junk_ends_every_instance_in_one_place_by_dicomweb_and_dimse(
    junk: Junk,
    bundle: str,
    tmp_path: Path,
    mura: Mura,
) -> None:
    server = junk.server
    assert 0 < junk.wheel_accepted < junk.wheel_files  # Orthanc refuses some (DICOMDIR, dumps…)
    instances = held(server)
    expected = expect(instances, MODALITIES)
    assert expected.unlisted > 0 and expected.unnamable == 1  # NM, ECG, no modality, '@'
    assert any(k.startswith("non-image") for k in expected.skipped)
    assert expected.skipped["modality XC"] == 1 and expected.skipped["unusable UID"] == 1
    assert max(expected.rows.values()) > 1  # multi-frame instances: one row per frame

    auth = private_file(tmp_path / "auth", f"{server.cfg.username}:{server.cfg.password}")
    flags = ("--model", bundle, "--modality", ",".join(MODALITIES))
    web_out = tmp_path / "by-dicomweb"
    said = mura("screen", server.dicomweb, *flags, "--out", str(web_out), "--pacs-auth", str(auth))
    web = check_every_instance_accounted_for(junk, said, web_out, server.dicomweb, expected)
    assert server.cfg.password not in said.out + said.err

    dimse_out = tmp_path / "by-dimse"
    said = mura("screen", server.dimse, *flags, "--out", str(dimse_out))
    dimse = check_every_instance_accounted_for(junk, said, dimse_out, server.dimse, expected)

    # the same bytes give the same probability, whichever protocol fetched them
    both = web.scored.keys() & dimse.scored.keys()
    assert len(both) >= 0.95 * len(web.scored)
    assert all(abs(web.scored[k] - dimse.scored[k]) <= 1e-6 for k in both)
    # where the protocols differ, it is a PACS-side refusal with its reason, never a crash
    for image in web.scored.keys() ^ dimse.scored.keys():
        lost = dimse.quarantined.get(image) or web.quarantined[image]
        assert lost[0] in ("retrieve_failed", "corrupt"), (image, lost)
    print(
        f"\npydicom test files: {junk.pydicom_files} ({junk.wheel_files} in the wheel), "
        f"Orthanc accepted {junk.pydicom_accepted} ({junk.wheel_accepted} of the wheel's); "
        f"Orthanc holds {server.instance_count()} instances, "
        f"{expected.images} images listed ({sum(expected.rows.values())} rows), "
        f"skipped {dict(expected.skipped)}, {expected.unlisted} in studies not listed\n"
        f"DICOMweb: {len(web.scored)} scored, quarantined {dict(tally(web))}\n"
        f"DIMSE: {len(dimse.scored)} scored, quarantined {dict(tally(dimse))}"
    )


def test_inspect_a_pacs_holding_junk(junk: Junk, mura: Mura) -> None:
    server = junk.server
    expected = expect(held(server), MODALITIES)
    for key, value in server.auth_env.items():
        mura.env.setenv(key, value)
    for address in (server.dicomweb, server.dimse):
        said = mura("inspect", address, "--modality", ",".join(MODALITIES))
        assert said.rc == 0 and not said.err.strip(), said
        text = said.out
        protocol = address.split("+", 1)[0].split(":", 1)[0]
        assert text.startswith(f"{protocol} archive at {address}\n"), text
        total = re.search(r"^total\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", text, re.M)
        assert total is not None, text
        assert int(total[4]) == sum(expected.rows.values())  # one image per frame
        assert f"instances skipped: {sum(expected.skipped.values())}" in text
        assert _skipped_note(text) == expected.skipped
        assert f"note: {expected.studies} studies matched" in text
        assert server.cfg.password not in text


# --- 2. privacy ---------------------------------------------------------------------------


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def _printing_as_outside_pytest() -> Iterator[None]:
    """Log records and warnings printed to stderr, as a plain `mura` process prints them
    (logging's last-resort handler, Python's default `showwarning`): pytest collects both,
    and an identifier leaking through them would otherwise go unseen."""
    handler = logging.StreamHandler(sys.stderr)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _print_warning
            yield
    finally:
        root.removeHandler(handler)


def test_pacs_identifiers_and_credentials_never_reach_mlflow_the_report_or_the_log(
    junk: Junk,
    tmp_path: Path,
    mura: Mura,
) -> None:
    """Through the CLI (so Ray's output lands in REPORT/logs/), credentials from the
    environment, every study listed: pydicom's files hold invalid UIDs, dates and names,
    which pydicom would log verbatim while the PACS headers are parsed."""
    server = junk.server
    bundle = random_bundle(tmp_path / "bundle", threshold=0.0)  # flag all: pictures too
    for key, value in server.auth_env.items():
        mura.env.setenv(key, value)
    db, out = tmp_path / "mlflow.db", tmp_path / "report"
    argv = ["screen", server.dicomweb, "--model", str(bundle), "--out", str(out)]
    flags = ["--tracking-uri", f"sqlite:///{db}", "--modality", ",".join(MODALITIES)]
    with _printing_as_outside_pytest():
        said = mura(*argv, *flags, "--pictures", "3")
    assert said.rc == 0, said.err[-3000:]
    instances = held(server)
    screened = {h.study for h in instances if h.sop in expect(instances, MODALITIES).rows}
    listed = {h.study for h in instances if h.modality in MODALITIES}  # their headers read
    identifiers = {
        value for h in instances if h.study in listed for value in h.identifiers if len(value) >= 6
    }
    assert len(identifiers) > 3 * len(listed)
    user_password = f"{server.cfg.username}:{server.cfg.password}".encode()
    secrets = {
        server.cfg.password.encode(),
        user_password,
        base64.b64encode(user_password),
    }
    logged = [p for p in (tmp_path / "mlartifacts").rglob("*") if p.is_file()]
    assert {p.name for p in logged} >= REPORT_FILES
    written = [p for p in out.rglob("*") if p.is_file() and p.name != "reidentify.csv"]
    # the run's log (REPORT/logs/screen-*.log: whatever Ray printed, empty when its workers
    # were warm and quiet) is grepped too
    assert any(p.parent.name == "logs" for p in written)
    for path in [*logged, *written, db]:
        data = readable(path)
        leaked = [v for v in identifiers if v.encode() in data]
        assert not leaked, f"{path.name} holds {leaked[:3]}"
        assert not [s for s in secrets if s in data], f"{path.name} holds a PACS credential"
    terminal = (said.out + said.err).encode()  # a job's log, under `ray job submit`
    shown = [ln for ln in terminal.decode().splitlines() if any(v in ln for v in identifiers)]
    assert not shown, f"the terminal shows an identifier: {shown[:3]}"
    assert not [s for s in secrets if s in terminal]
    private = out / "reidentify.csv"
    assert private.stat().st_mode & 0o777 == 0o600
    assert all(study in private.read_text() for study in screened)
