"""Ingest with a real local Ray: shards, quarantine, manifest, idempotency, bad input."""

from __future__ import annotations

import csv
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mura_core import imaging
from mura_core.archive import SourceError
from mura_core.shards import Manifest, ManifestCounts, pixels_array, read_images, read_quarantine
from mura_core.synth import SynthArchive
from pipelines.ingest import IngestConfig, IngestError, run_ingest
from tests.processes import kill_driver_when

pytestmark = pytest.mark.usefixtures("ray_local")


def _ingest(source: Path, out: Path, **kwargs) -> Manifest:
    result = run_ingest(IngestConfig(source=source, out=out, size=kwargs.pop("size", 64), **kwargs))
    counts = result.manifest.counts
    assert counts.found == counts.ingested + counts.quarantined
    assert Manifest.read(out) == result.manifest  # what was written is what readers get
    return result.manifest


def test_mura_archive_to_shards(mura_archive: SynthArchive, tmp_path: Path) -> None:
    manifest = _ingest(mura_archive.root, tmp_path / "shards")
    assert manifest.kind == "mura" and manifest.law_holds is True
    assert manifest.counts == ManifestCounts(
        found=mura_archive.n_images,
        ingested=mura_archive.n_images,
        quarantined=0,
        junk_skipped=0,
    )
    on_disk = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert on_disk["counts"]["ingested"] == mura_archive.n_images and on_disk["law_holds"]
    assert on_disk["by_split"] == manifest.by_split and sum(on_disk["by_split"].values()) == (
        mura_archive.n_images
    )
    table = read_images(tmp_path / "shards")
    assert table.num_rows == mura_archive.n_images
    assert len(set(table.column("image_id").to_pylist())) == table.num_rows
    assert pixels_array(table.column("pixels")).shape == (table.num_rows, 64, 64)
    rows = table.drop(["pixels"]).to_pylist()
    # MURA valid is the test split; val is carved from train by patient
    for row in rows:
        assert (row["source_split"] == "valid") == (row["split"] == "test")
    patients: dict[str, set[str]] = {}
    for row in rows:
        patients.setdefault(row["patient_key"], set()).add(row["split"])
    assert all(len(s) == 1 for s in patients.values())
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    assert read_quarantine(tmp_path / "shards").num_rows == 0


def test_shard_pixels_equal_imagings_output(mura_archive: SynthArchive, tmp_path: Path) -> None:
    _ingest(mura_archive.root, tmp_path / "shards", size=96)
    table = read_images(tmp_path / "shards", columns=["relpath", "pixels", "orig_height"])
    pixels = pixels_array(table.column("pixels"))
    for i in (0, table.num_rows // 2, table.num_rows - 1):
        relpath = table.column("relpath")[i].as_py()
        expected = imaging.load_image(mura_archive.root / relpath, size=96)
        assert np.array_equal(pixels[i], expected), relpath
        assert (
            table.column("orig_height")[i].as_py()
            == Image.open(mura_archive.root / relpath).size[1]
        )


def test_corrupt_file_mix_is_quarantined_with_reasons(
    mura_archive: SynthArchive, tmp_path: Path
) -> None:
    root = tmp_path / "mix"
    shutil.copytree(mura_archive.root, root)
    pngs = sorted((root / "MURA-v1.1" / "train").rglob("*.png"))
    data = pngs[0].read_bytes()
    pngs[0].write_bytes(data[: len(data) // 3])  # truncated
    pngs[1].write_bytes(b"")  # empty
    pngs[2].write_bytes(b"this is not a png")  # garbage
    Image.new("L", (2, 2)).save(pngs[3], format="JPEG")  # wrong suffix, still an image
    (pngs[4].parent / ".DS_Store").write_bytes(b"Bud1")  # junk
    manifest = _ingest(root, tmp_path / "shards")
    counts = manifest.counts
    assert counts.quarantined == 3 and counts.junk_skipped == 1
    assert counts.ingested == mura_archive.n_images - 3
    quarantine = read_quarantine(tmp_path / "shards").to_pylist()
    by_path = {Path(q["path"]).name + ":" + q["path"].split("/")[-2]: q for q in quarantine}
    assert len(by_path) == 3
    for q in quarantine:
        assert q["stage"] == "decode" and q["error_type"] == "corrupt" and q["reason"]
        assert q["image_id"] and q["study_key"]
    assert manifest.quarantine_by_type == {"corrupt": 3}


def test_rerun_replaces_and_never_duplicates(mura_archive: SynthArchive, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    first = _ingest(mura_archive.root, out, rows_per_shard=40)
    files_before = sorted(p.name for p in (out / "images").iterdir())
    second = _ingest(mura_archive.root, out, rows_per_shard=40)
    assert second.counts == first.counts
    assert read_images(out).num_rows == mura_archive.n_images
    assert sorted(p.name for p in (out / "images").iterdir()) != files_before  # replaced
    assert all(pq.ParquetFile(f).metadata.num_rows <= 40 for f in (out / "images").iterdir())
    assert not list(out.glob(".staging-*"))


def _staged(out: Path) -> dict[str, int]:
    """Whole staged files (a file the kill cut off has no footer) and their rows."""
    whole = {}
    for path in out.glob(".staging-*/*.parquet"):
        try:
            whole[path.name] = pq.read_metadata(path).num_rows
        except (OSError, pa.ArrowInvalid):
            continue
    return whole


def test_run_killed_half_way_then_rerun_resumes_to_exactly_the_full_set(
    tmp_path: Path, mura_archive: SynthArchive
) -> None:
    """A real kill: the driver of a subprocess (its own local Ray) SIGKILLed while it writes;
    nothing of its Ray is left alive. The re-run keeps every whole file the killed run
    staged, decodes only the other images, and gives the rows of an uninterrupted run."""
    out = tmp_path / "shards"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    flags = ["--size", "64", "--batch-size", "2", "--rows-per-shard", "4"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.ingest", str(mura_archive.root), "--out", str(out), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    # generous: on a loaded machine Ray alone may take a minute to start (the wait ends
    # as soon as two files are staged)
    killed = kill_driver_when(proc, lambda: len(_staged(out)) >= 2, timeout=180)
    assert killed.had_ray and not killed.left, killed
    assert not (out / "manifest.json").exists(), "the kill came too late to test anything"
    with pytest.raises(Exception):  # noqa: B017 - any reader must refuse the incomplete set
        Manifest.read(out)
    staged = _staged(out)
    assert 0 < sum(staged.values()) < mura_archive.n_images

    result = run_ingest(IngestConfig(source=mura_archive.root, out=out, size=64, rows_per_shard=4))
    assert result.resumed == sum(staged.values())
    assert set(staged) <= {p.name for p in (out / "images").glob("*.parquet")}
    assert result.manifest.counts.ingested == mura_archive.n_images
    whole = _ingest(mura_archive.root, tmp_path / "whole", rows_per_shard=4)
    assert whole.counts == result.manifest.counts and whole.by_split == result.manifest.by_split
    a, b = (read_images(o).sort_by("image_id") for o in (out, tmp_path / "whole"))
    assert a.equals(b)


def test_dicom_tree_is_pseudonymized_with_a_private_map_back(
    dicom_archive: SynthArchive, tmp_path: Path
) -> None:
    out = tmp_path / "shards"
    manifest = _ingest(dicom_archive.root, out)
    assert manifest.kind == "dicom" and manifest.pseudonymized is True
    assert manifest.counts.ingested == dicom_archive.n_images
    import pydicom

    secrets = set()
    for path in dicom_archive.root.rglob("*"):
        if path.is_file() and path.name != "labels.csv":
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            secrets |= {
                str(ds.PatientID),
                str(ds.PatientName),
                str(ds.StudyInstanceUID),
                str(ds.SOPInstanceUID),
                str(ds.AccessionNumber),
            }
    table = read_images(out).drop(["pixels"])
    text = json.dumps(table.to_pylist()) + (out / "manifest.json").read_text()
    text += json.dumps(read_quarantine(out).to_pylist())
    leaked = [s for s in secrets if s in text]
    assert leaked == []
    assert all(v.startswith("pt-") for v in table.column("patient_key").to_pylist())
    assert all(v.startswith("st-") for v in table.column("study_key").to_pylist())
    reid = out / "reidentify.csv"
    assert stat.S_IMODE(reid.stat().st_mode) == 0o600
    rows = list(csv.DictReader(reid.open()))
    mapping = {(r["kind"], r["pseudonym"]): r["original"] for r in rows}
    for key in table.column("patient_key").to_pylist():
        assert mapping["patient", key].startswith("MRN")
    # each study's AccessionNumber, by the study's pseudonym (how reads are matched later)
    for key in set(table.column("study_key").to_pylist()):
        assert mapping["accession", key].startswith("ACC")
        assert mapping["study", key] in secrets
    labels = {r["study_key"]: r["label"] for r in table.to_pylist()}
    assert set(labels.values()) <= {0, 1}


def test_shared_radiographs_jply_quarantined(shared_dicom: Path, tmp_path: Path) -> None:
    manifest = _ingest(shared_dicom, tmp_path / "shards", size=128)
    assert manifest.counts == ManifestCounts(
        found=8, ingested=6, quarantined=2, junk_skipped=1
    )  # README.md beside the files
    quarantine = read_quarantine(tmp_path / "shards").to_pylist()
    assert len(quarantine) == 2
    for row in quarantine:
        assert row["error_type"] == "unsupported_transfer_syntax"
        assert "JPEG Extended" in row["reason"] and "1.2.840.10008.1.2.4.51" in row["reason"]
    # RG3 is MONOCHROME1: the shards record the inversion
    rows = read_images(tmp_path / "shards").drop(["pixels"]).to_pylist()
    assert sum(r["inverted"] for r in rows) == 4


def test_shards_are_readable_by_plain_pyarrow_without_ray(
    mura_archive: SynthArchive, tmp_path: Path
) -> None:
    _ingest(mura_archive.root, tmp_path / "shards")
    code = (
        "import sys, glob, pyarrow.parquet as pq\n"
        f"files = sorted(glob.glob({str(tmp_path / 'shards' / 'images' / '*.parquet')!r}))\n"
        "t = pq.read_table(files[0])\n"
        "import numpy as np\n"
        "col = t.column('pixels').combine_chunks()\n"
        "assert str(col.type) == 'fixed_size_binary[4096]', col.type\n"
        "a = np.frombuffer(col.buffers()[1], np.uint8).reshape(len(col), 64, 64)\n"
        "assert a.max() > 0\n"
        "assert not any(m == 'ray' or m.startswith('ray.') for m in sys.modules)\n"
        "print(t.num_rows)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 0


def test_whole_run_problems_fail_fast_and_write_nothing(
    mura_archive: SynthArchive, tmp_path: Path
) -> None:
    with pytest.raises(SourceError, match="not found"):
        run_ingest(IngestConfig(source=tmp_path / "absent", out=tmp_path / "o1"))
    assert not (tmp_path / "o1").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images"):
        run_ingest(IngestConfig(source=tmp_path / "empty", out=tmp_path / "o2"))
    assert not (tmp_path / "o2" / "manifest.json").exists()
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(IngestError, match="cannot write|not a folder"):
        run_ingest(IngestConfig(source=mura_archive.root, out=blocker / "shards"))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(IngestError, match="not empty"):
        run_ingest(IngestConfig(source=mura_archive.root, out=foreign))
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_other_source_into_same_out_needs_force(
    mura_archive: SynthArchive, dicom_archive: SynthArchive, tmp_path: Path
) -> None:
    out = tmp_path / "shards"
    _ingest(mura_archive.root, out)
    with pytest.raises(IngestError, match="another source"):
        run_ingest(IngestConfig(source=dicom_archive.root, out=out, size=64))
    assert Manifest.read(out).kind == "mura"
    assert _ingest(dicom_archive.root, out, force=True).kind == "dicom"
