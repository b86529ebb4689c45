"""Fuzz the listers: MURA's CSVs, a folder's `labels.csv` and a DICOM tree's headers.

Hypothesis writes thousands of hostile variants into a real archive on disk — CSV rows from
a grammar of real paths, `..` climbs, absolute paths, Windows separators, stray quotes and
bytes, labels that disagree; DICOM files with bytes flipped, cut or inserted in their
header — and lists it. Each listing must end as a `Listing` in which every file is
accounted for (a reference, a problem with a known reason, or junk), or as one
`SourceError` line; within a CPU-time bound; never another exception. The budget is
`MURA_FUZZ_EXAMPLES` examples per target (default: a short run for `make test`; `make fuzz`
runs a long one).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mura_core.archive import ArchiveFiles, SourceError, list_archive
from mura_core.listing import Listing
from mura_core.synth import SynthArchive, SynthConfig, synthesize

EXAMPLES = int(os.environ.get("MURA_FUZZ_EXAMPLES", "300"))
CPU_SECONDS = 5.0  # per listing; CPU time, so a busy machine does not fail it
KNOWN = {
    "bad_csv_row",
    "missing_file",
    "bad_path",
    "outside_archive",
    "conflicting_labels",
    "unexpected_layout",
    "not_an_image",
    "unknown_body_part",
    "not_a_regular_file",
    "too_large",
    "not_dicom",
    "corrupt",
    "missing_study_uid",
    "duplicate_instance",
}
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def small_mura(tmp_path_factory: pytest.TempPathFactory) -> SynthArchive:
    out = tmp_path_factory.mktemp("fuzz-mura") / "archive"
    return synthesize(out, SynthConfig(studies=6, seed=11, size=64), workers=1)


@pytest.fixture(scope="module")
def small_dicom(tmp_path_factory: pytest.TempPathFactory) -> SynthArchive:
    out = tmp_path_factory.mktemp("fuzz-dicom") / "archive"
    return synthesize(out, SynthConfig(studies=2, format="dicom", seed=12, size=64), workers=1)


def _listed(root: Path, **kwargs: object) -> Listing | None:
    """List `root`; None for a one-line SourceError. Any other exception fails the test."""
    started = time.process_time()
    try:
        listing = list_archive(root, **kwargs)  # type: ignore[arg-type]
    except SourceError as exc:
        assert "\n" not in str(exc)
        return None
    assert time.process_time() - started < CPU_SECONDS
    return listing


def _accounted(listing: Listing, root: Path) -> None:
    """Every usable file is a reference or a problem; every problem has a known reason."""
    assert {p.error_type for p in listing.problems} <= KNOWN
    referenced = {r.relpath for r in listing.refs}
    refused = {p.path for p in listing.problems}
    for entry in ArchiveFiles.at(root).walk():
        if entry.usable and not entry.rel.endswith((".csv", ".txt")):
            assert entry.rel in referenced | refused, entry.rel
    for ref in listing.refs:
        assert ref.label in (None, 0, 1)
        assert Path(ref.location.path).resolve().is_relative_to(root.resolve())


_SEGMENTS = st.sampled_from(
    [
        "train",
        "valid",
        "XR_WRIST",
        "XR_HAND",
        "XR_BOGUS",
        "patient00001",
        "study1_positive",
        "study2_negative",
        "image1.png",
        "..",
        ".",
        "",
        "~",
        "MURA-v1.1",
        "C:",
        "etc",
        "passwd",
    ]
)
_PATH = st.one_of(
    st.lists(_SEGMENTS, min_size=1, max_size=8).map("/".join),
    st.lists(_SEGMENTS, min_size=1, max_size=8).map("\\".join),
    st.text(max_size=40),
)


def _row(paths: list[str]) -> st.SearchStrategy[str]:
    label = st.sampled_from(["0", "1", "2", "", "abnormal", "1.0", '"1"', "-1"])
    path = st.one_of(st.sampled_from(paths), _PATH) if paths else _PATH
    extra = st.lists(st.text(max_size=6), max_size=2)
    return st.tuples(path, label, extra).map(lambda t: ",".join([t[0], t[1], *t[2]]))


def _csv_text(data: st.DataObject, paths: list[str]) -> str:
    rows = data.draw(st.lists(_row(paths), max_size=25))
    return "\n".join(rows) + data.draw(st.sampled_from(["", "\n", "\r\n", "\x00", '"']))


@FUZZ
@given(data=st.data())
def test_fuzz_mura_csvs(small_mura: SynthArchive, tmp_path: Path, data: st.DataObject) -> None:
    root = Path(tempfile.mkdtemp(dir=tmp_path)) / "archive"
    shutil.copytree(small_mura.root, root)
    mura = root / "MURA-v1.1"
    studies = [
        line.rsplit(",", 1)[0]
        for line in (mura / "train_labeled_studies.csv").read_text().splitlines()
    ]
    images = (mura / "train_image_paths.csv").read_text().splitlines()
    for name, paths in (("train_labeled_studies.csv", studies), ("train_image_paths.csv", images)):
        if data.draw(st.booleans()):
            (mura / name).write_text(_csv_text(data, paths), encoding="utf-8", errors="replace")
    listing = _listed(root)
    if listing is not None:
        _accounted(listing, root)
    shutil.rmtree(root.parent)


@FUZZ
@given(data=st.data())
def test_fuzz_folder_labels_csv(tmp_path: Path, data: st.DataObject) -> None:
    from tests import hostile

    root = Path(tempfile.mkdtemp(dir=tmp_path)) / "archive"
    names = [f"wrist/img{i}.png" for i in range(4)]
    for i, name in enumerate(names):
        hostile.png(root / name, size=8, seed=i)
    columns = data.draw(
        st.lists(
            st.sampled_from(["path", "label", "study", "split", "body_part", "x"]),
            min_size=1,
            max_size=5,
            unique=True,
        )
    )
    header = ",".join(columns)
    (root / "labels.csv").write_text(header + "\n" + _csv_text(data, names), errors="replace")
    listing = _listed(root, kind="folder")
    if listing is not None:
        _accounted(listing, root)
        by_study: dict[str, set[int | None]] = {}
        for ref in listing.refs:
            by_study.setdefault(ref.study_key, set()).add(ref.label)
        assert all(len(labels) == 1 for labels in by_study.values())  # one label a study
    shutil.rmtree(root.parent)


def _mutate(data: st.DataObject, blob: bytes) -> bytes:
    """Flip, cut or insert bytes, mostly in the header (the first 1 KiB)."""
    out = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 6))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "length"]))
        at = data.draw(st.integers(0, min(len(out) - 1, 1024)))
        if kind == "flip":
            out[at] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del out[at : at + data.draw(st.integers(1, 64))]
        elif kind == "insert":
            out[at:at] = data.draw(st.binary(min_size=1, max_size=16))
        else:  # a 4-byte length field set to a huge or odd value
            out[at : at + 4] = data.draw(
                st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x80", b"\x01\x00\x00\x00"])
            )
        if not out:
            break
    return bytes(out)


@FUZZ
@given(data=st.data())
def test_fuzz_dicom_listing(small_dicom: SynthArchive, tmp_path: Path, data: st.DataObject) -> None:
    root = Path(tempfile.mkdtemp(dir=tmp_path)) / "archive"
    shutil.copytree(small_dicom.root, root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".csv")
    for path in data.draw(st.lists(st.sampled_from(files), min_size=1, max_size=3, unique=True)):
        path.write_bytes(_mutate(data, path.read_bytes()))
    listing = _listed(root, kind="dicom")
    if listing is not None:
        _accounted(listing, root)
    shutil.rmtree(root.parent)
