"""Hostile and careless archives through the `mura` command, one test per way a night is lost.

Each archive is built for real (a FIFO, links to /dev/zero and out of the archive, CSV paths
that climb out, rows that disagree, DICOM header bombs, an instance copied under a second
name, an 8000 x 8000 PNG) and run through `mura inspect` or `mura ingest` as a subprocess;
each test asserts the clean outcome: the run ends, and the file ends as a problem row with
its reason, never read, or (the large image) ingested within bounded memory.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mura_core.archive import list_archive
from mura_core.checkpoints import save_bundle
from mura_core.model_info import ModelInfo
from mura_core.models import build_model
from mura_core.synth import SynthArchive, SynthConfig, synthesize
from tests import hostile

PROJECT = Path(__file__).resolve().parents[2]


def _mura(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        timeout=timeout,
    )


def _measured(*args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], int]:
    """`mura ARGS` run by a parent that reports its peak resident memory (MiB)."""
    code = textwrap.dedent(
        """
        import resource, subprocess, sys
        done = subprocess.run([sys.executable, "-m", "jobs.cli", *sys.argv[1:]],
                              capture_output=True, text=True)
        sys.stdout.write(done.stdout); sys.stderr.write(done.stderr)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
        sys.stderr.write(f"\\npeak-rss-mib {peak}\\n")
        sys.exit(done.returncode)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        timeout=timeout,
    )
    peak = int(done.stderr.rsplit("peak-rss-mib", 1)[1].split()[0])
    return done, peak


def _problems(stdout: str) -> dict[str, str]:
    """`mura inspect`'s problem lines: path → error type."""
    out = {}
    for line in stdout.splitlines():
        if line.startswith("  ") and ": " in line and not line.strip().startswith("…"):
            error_type, rest = line.strip().split(": ", 1)
            out[rest.split(": ", 1)[0]] = error_type
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder archive with a FIFO, a link to /dev/zero, a link out of the archive, a
    labels.csv whose rows climb out or disagree, and an 8000 x 8000 PNG."""
    base = tmp_path_factory.mktemp("hostile")
    root, outside = base / "archive", base / "outside"
    for i in range(6):
        hostile.png(root / "hand" / f"img{i}.png", seed=i)
    hostile.png(outside / "secret.png", seed=99)
    hostile.fifo(root / "hand" / "image9.png")
    (root / "hand" / "zero.png").symlink_to("/dev/zero")
    (root / "hand" / "out.png").symlink_to(outside / "secret.png")
    hostile.big_png(root / "hand" / "big.png")
    (root / "labels.csv").write_text(
        "path,label,study\n"
        "hand/img0.png,1,s0\n"
        "hand/img0.png,0,s0\n"  # the same image labelled twice, differently
        "hand/img1.png,1,s1\n"
        "hand/img2.png,0,s1\n"  # one study, its images labelled differently
        "hand/img3.png,1,s3\n"
        "../outside/secret.png,1,s9\n"  # exists outside the archive
        "hand/../../outside/nothing.png,0,s9\n"  # does not exist outside the archive
    )
    return root


@pytest.fixture(scope="module")
def folder_inspected(folder: Path) -> subprocess.CompletedProcess[str]:
    """`mura inspect` of the hostile folder (it must end: a timeout fails the test)."""
    return _mura("inspect", str(folder), timeout=120)


def test_inspect_ends_on_a_fifo_and_refuses_links_out(
    folder: Path, folder_inspected: subprocess.CompletedProcess[str]
) -> None:
    result = folder_inspected
    assert result.returncode == 0, result.stderr
    problems = _problems(result.stdout)
    assert problems["hand/image9.png"] == "not_a_regular_file"
    assert problems["hand/zero.png"] == "outside_archive"
    assert problems["hand/out.png"] == "outside_archive"
    followed = _problems(_mura("inspect", str(folder), "--follow-links", timeout=120).stdout)
    assert followed["hand/zero.png"] == "not_a_regular_file"  # a device: never read
    assert "hand/out.png" not in followed  # allowed by the user
    capped = _problems(_mura("inspect", str(folder), "--max-file-size", "0.1").stdout)
    assert capped["hand/big.png"] == "too_large"


def test_csv_paths_out_of_the_archive_say_nothing_of_what_is_there(
    folder_inspected: subprocess.CompletedProcess[str],
) -> None:
    result = folder_inspected
    lines = [line for line in result.stdout.splitlines() if "outside" in line and ".png" in line]
    existing = next(line for line in lines if "secret.png" in line and "line 7" in line)
    missing = next(line for line in lines if "nothing.png" in line)
    assert "outside_archive" in existing and "outside_archive" in missing
    # the same words whether the file exists or not: the listing never looked
    assert existing.split("line 7", 1)[1] == missing.split("line 8", 1)[1]
    assert "missing_file" not in result.stdout


@pytest.fixture(scope="module")
def ingested(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hostile-shards") / "shards"
    result = _mura("ingest", str(folder), "--out", str(out), "--size", "64", timeout=600)
    assert result.returncode == 0, result.stderr
    return out


def _quarantine(out: Path) -> dict[str, set[str]]:
    rows = pq.read_table(out / "quarantine.parquet").to_pylist()
    found: dict[str, set[str]] = {}
    for row in rows:
        found.setdefault(row["path"], set()).add(row["error_type"])
    return found


@pytest.mark.slow
def test_ingest_ends_with_the_fifo_quarantined(ingested: Path) -> None:
    assert _quarantine(ingested)["hand/image9.png"] == {"not_a_regular_file"}
    manifest = json.loads((ingested / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["found"] == counts["ingested"] + counts["quarantined"]


@pytest.mark.slow
def test_ingest_never_reads_dev_zero_or_a_file_outside(ingested: Path) -> None:
    quarantine = _quarantine(ingested)
    assert quarantine["hand/zero.png"] == {"outside_archive"}
    assert quarantine["hand/out.png"] == {"outside_archive"}
    assert quarantine["../outside/secret.png"] == {"outside_archive"}
    relpaths = pq.read_table(ingested / "images", columns=["relpath"]).column("relpath")
    assert not {"hand/out.png", "hand/zero.png", "../outside/secret.png"} & set(
        relpaths.to_pylist()
    )


@pytest.mark.slow
def test_ingest_leaves_studies_with_conflicting_labels_unlabelled(ingested: Path) -> None:
    quarantine = _quarantine(ingested)
    assert quarantine["hand/img0.png"] == {"conflicting_labels"}
    assert quarantine["hand/img1.png"] == {"conflicting_labels"}  # study s1: 1 and 0
    table = pq.read_table(ingested / "images", columns=["study_key", "label"]).to_pylist()
    labels = {row["study_key"]: row["label"] for row in table}
    assert labels["s0"] is None and labels["s1"] is None and labels["s3"] == 1


@pytest.mark.slow
def test_an_8000px_png_is_ingested(ingested: Path) -> None:
    table = pq.read_table(
        ingested / "images", columns=["relpath", "orig_height", "orig_width"]
    ).to_pylist()
    big = next(row for row in table if row["relpath"] == "hand/big.png")
    assert (big["orig_height"], big["orig_width"]) == (8000, 8000)


def _mura_copy(archive: SynthArchive, dest: Path) -> Path:
    shutil.copytree(archive.root, dest)
    return dest


def test_mura_csv_rows_that_disagree_or_climb_out(
    mura_archive: SynthArchive, tmp_path: Path
) -> None:
    root = _mura_copy(mura_archive, tmp_path / "archive")
    (tmp_path / "outside").mkdir()
    hostile.png(tmp_path / "outside" / "x.png")
    studies = root / "MURA-v1.1" / "train_labeled_studies.csv"
    first, label = studies.read_text().splitlines()[0].rsplit(",", 1)
    with studies.open("a") as handle:
        handle.write(f"{first},{1 - int(label)}\n")
    images = root / "MURA-v1.1" / "train_image_paths.csv"
    with images.open("a") as handle:
        handle.write("MURA-v1.1/train/XR_WRIST/../../../../etc/passwd\n")
        handle.write("MURA-v1.1/train/XR_WRIST/../../../../outside/x.png\n")
    result = _mura("inspect", str(root), timeout=120)
    assert result.returncode == 0, result.stderr
    problems = _problems(result.stdout)
    assert problems[first] == "conflicting_labels"
    assert problems["MURA-v1.1/train/XR_WRIST/../../../../etc/passwd"] == "outside_archive"
    assert problems["MURA-v1.1/train/XR_WRIST/../../../../outside/x.png"] == "outside_archive"


@pytest.fixture(scope="module")
def dicom_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small DICOM tree with a deflate bomb, a 2,000,000-frame header, an instance copied
    under a second name, and a labels.csv labelling one study twice, differently."""
    root = tmp_path_factory.mktemp("hostile-dicom") / "archive"
    synthesize(root, SynthConfig(studies=3, format="dicom", seed=5, size=96), workers=1)
    first = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".csv")[0]
    (root / "zzz").mkdir()  # walked last: the copy, not the original, is the second
    shutil.copy(first, root / "zzz" / "copy-of-first.dcm")
    hostile.deflate_bomb(root / "bomb.dcm", inflated=1024**3)
    hostile.many_frames(root / "frames.dcm")
    labels = (root / "labels.csv").read_text().splitlines()
    uid, label = labels[1].rsplit(",", 1)
    (root / "labels.csv").write_text("\n".join([*labels, f"{uid},{1 - int(label)}"]) + "\n")
    return root


@pytest.fixture(scope="module")
def dicom_inspected(
    dicom_tree: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], int, int]:
    """`mura inspect` of the hostile tree with its peak memory, and the CLI's own peak on a
    one-image folder (its imports) as the baseline."""
    tiny = tmp_path_factory.mktemp("tiny")
    hostile.png(tiny / "a.png")
    _, baseline_mib = _measured("inspect", str(tiny))
    result, peak_mib = _measured("inspect", str(dicom_tree))
    return result, peak_mib, baseline_mib


def test_dicom_header_bombs_cost_milliseconds_and_little_memory(
    dicom_tree: Path, dicom_inspected: tuple[subprocess.CompletedProcess[str], int, int]
) -> None:
    result, peak_mib, baseline_mib = dicom_inspected
    assert result.returncode == 0, result.stderr
    problems = _problems(result.stdout)
    assert problems["frames.dcm"] == "too_large"
    assert peak_mib - baseline_mib < 150, f"inspect peaked at {peak_mib} MiB ({baseline_mib})"
    total = next(line for line in result.stdout.splitlines() if line.startswith("total"))
    assert int(total.split()[-1]) < 100  # not 2,000,000 frames listed
    # the bomb's header is honest: listed (or refused), never inflated whole
    assert problems.get("bomb.dcm", "too_large") == "too_large"
    cpu = time.process_time()
    list_archive(dicom_tree)
    assert time.process_time() - cpu < 5  # CPU seconds: the same on a busy machine


def test_dicom_duplicates_and_conflicting_labels(
    dicom_inspected: tuple[subprocess.CompletedProcess[str], int, int],
) -> None:
    problems = _problems(dicom_inspected[0].stdout)
    assert problems["zzz/copy-of-first.dcm"] == "duplicate_instance"
    assert problems["labels.csv"] == "conflicting_labels"


@pytest.mark.slow
def test_dicom_ingest_counts_a_copied_instance_once(dicom_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    result = _mura("ingest", str(dicom_tree), "--out", str(out), "--size", "64")
    assert result.returncode == 0, result.stderr
    quarantine = pq.read_table(out / "quarantine.parquet").to_pylist()
    kinds = [row["error_type"] for row in quarantine]
    assert kinds.count("too_large") == 2  # the frames header when listed, the bomb at latest
    assert {"duplicate_instance", "conflicting_labels"} <= set(kinds)
    ids = pq.read_table(out / "images", columns=["image_id"]).column("image_id").to_pylist()
    assert len(ids) == len(set(ids))


@pytest.mark.slow
def test_dicom_screen_counts_a_copied_instance_once(dicom_tree: Path, tmp_path: Path) -> None:
    """`mura screen` of the hostile tree (an untrained model: what is counted, not what is
    found): the copied instance is not scored, each study's mean counts each image once, the
    bombs are quarantined."""
    size = 32
    info = ModelInfo(model="cnn", size=size, mean=(0.5,) * 3, std=(0.25,) * 3)
    bundle = save_bundle(tmp_path / "bundle", build_model("cnn", size=size), info)
    out = tmp_path / "report"
    result = _mura(
        "screen", str(dicom_tree), "--model", str(bundle), "--out", str(out), "--gpus", "0",
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    scorable = [r for r in list_archive(dicom_tree).refs if r.relpath != "bomb.dcm"]
    images = pq.read_table(out / "images.parquet", columns=["image_id"]).column("image_id")
    assert len(images) == len(set(images.to_pylist())) == len(scorable)
    studies = pq.read_table(out / "studies.parquet", columns=["images"]).column("images")
    assert sum(studies.to_pylist()) == len(scorable)
    kinds = pq.read_table(out / "quarantine.parquet").column("error_type").to_pylist()
    assert kinds.count("duplicate_instance") == 1 and kinds.count("too_large") == 2
