"""Synthetic archives: deterministic, MURA-shaped, radiograph-like, with a learnable sign."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pydicom  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from mura_core import imaging  # noqa: E402
from mura_core.body_parts import MURA_BODY_PARTS  # noqa: E402
from mura_core.synth import (  # noqa: E402
    SIGNS,
    SynthArchive,
    SynthConfig,
    SynthError,
    plan_archive,
    render_view,
    synthesize,
)
from mura_core.synth.plan import MURA_V11  # noqa: E402


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    cfg = SynthConfig(studies=6, seed=11, size=128)
    a = synthesize(tmp_path / "a", cfg, workers=1)
    b = synthesize(tmp_path / "b", cfg, workers=1)
    c = synthesize(tmp_path / "c", SynthConfig(studies=6, seed=12, size=128), workers=1)
    assert _digest(a.root) == _digest(b.root) != _digest(c.root)


def test_parallel_rendering_is_byte_identical_to_serial(tmp_path: Path) -> None:
    cfg = SynthConfig(studies=50, seed=5, size=96)
    serial = synthesize(tmp_path / "serial", cfg, workers=1)
    parallel = synthesize(tmp_path / "parallel", cfg, workers=2)
    assert _digest(serial.root) == _digest(parallel.root)


def test_plan_shape(tmp_path: Path) -> None:
    plan = plan_archive(SynthConfig(studies=300, seed=1))
    assert len(plan) == 300
    assert {s.body_part for s in plan} == set(MURA_BODY_PARTS)
    positives = [s for s in plan if s.label == 1]
    assert 0.3 < len(positives) / len(plan) < 0.5
    assert all(1 <= len(s.views) <= 4 for s in plan)
    for study in plan:
        carrying = [v.sign for v in study.views if v.sign]
        if study.label:
            assert carrying and set(carrying) == {study.sign}
        else:
            assert not carrying
    # "some of their views": abnormal studies with more than one view do not always show it
    assert any(len([v for v in s.views if v.sign]) < len(s.views) for s in positives)
    # patients stay in one split
    splits: dict[int, set] = {}
    for s in plan:
        splits.setdefault(s.patient_index, set()).add(s.split)
    assert all(len(v) == 1 for v in splits.values())
    sizes = [(v.height, v.width) for s in plan for v in s.views]
    assert max(max(s) for s in sizes) <= 512 and min(min(s) for s in sizes) >= 64
    assert len({round(h / w, 1) for h, w in sizes}) > 5


def test_like_mura_plans_mura_v11_exactly() -> None:
    """Per body part and split, MURA-v1.1's normal and abnormal studies and its images."""
    plan = plan_archive(SynthConfig.like_mura(1.0, size=512))
    assert len(plan) == 14_656 and sum(len(s.views) for s in plan) == 40_005
    studies = Counter((s.body_part, s.split, s.label) for s in plan)
    images = Counter((s.body_part, s.split) for s in plan for _ in s.views)
    for part, splits in MURA_V11.items():
        for split, (normal, abnormal, n_images) in splits.items():
            assert (studies[(part, split, 0)], studies[(part, split, 1)]) == (normal, abnormal)
            assert images[(part, split)] == n_images
    splits_of: dict[str, set[str]] = {}
    for s in plan:
        splits_of.setdefault(s.patient, set()).add(str(s.split))
    assert 11_500 < len(splits_of) < 12_800  # MURA: 12,173
    assert all(len(splits) == 1 for splits in splits_of.values())  # a patient in one split
    sixteenth = plan_archive(SynthConfig.like_mura(1 / 16))
    assert sum(len(s.views) for s in sixteenth) == pytest.approx(40_005 / 16, rel=0.01)


def test_images_are_written_within_size_and_some_as_rgb(mura_archive: SynthArchive) -> None:
    pngs = sorted(mura_archive.root.rglob("*.png"))
    modes = {Image.open(p).mode for p in pngs}
    assert modes == {"L", "RGB"}
    assert all(max(Image.open(p).size) <= 160 for p in pngs)


def test_dicom_tree_headers_and_encodings(dicom_archive: SynthArchive) -> None:
    files = [p for p in dicom_archive.root.rglob("*") if p.is_file() and p.name != "labels.csv"]
    seen = {"photometric": set(), "ts": set(), "suffix": set()}
    for path in files:
        ds = pydicom.dcmread(path)
        assert ds.Modality == "DX" and ds.PatientName and ds.PatientID and ds.StudyInstanceUID
        seen["photometric"].add(ds.PhotometricInterpretation)
        seen["ts"].add(ds.file_meta.TransferSyntaxUID.name)
        seen["suffix"].add(path.suffix)
        decoded = imaging.decode(path)
        assert decoded.frames[0].shape == (ds.Rows, ds.Columns)
    assert seen["photometric"] == {"MONOCHROME1", "MONOCHROME2"}
    assert "RLE Lossless" in seen["ts"] and len(seen["ts"]) == 2
    assert seen["suffix"] == {"", ".dcm"}


def test_dicom_decodes_back_to_the_rendered_picture(dicom_archive: SynthArchive) -> None:
    """MONOCHROME1 files must decode bone-bright, like the MONOCHROME2 ones."""
    from mura_core.synth import render_study

    for study in dicom_archive.studies[:4]:
        rendered = render_study(study)[0]
        rels = dicom_archive.files[study.index]
        decoded = imaging.decode(dicom_archive.root / rels[0]).frames[0].astype(float)
        corr = np.corrcoef(rendered.ravel(), decoded.ravel())[0, 1]
        assert corr > 0.95, (study.index, corr)


def test_out_must_be_new_or_empty(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("precious")
    with pytest.raises(SynthError, match="not empty"):
        synthesize(tmp_path / "full", SynthConfig(studies=1))
    assert (tmp_path / "full" / "keep.txt").read_text() == "precious"
    synthesize(tmp_path / "empty", SynthConfig(studies=1, size=64), workers=1)
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize(
    "kwargs", [{"studies": 0}, {"studies": 1, "format": "tiff"}, {"studies": 1, "size": 10}]
)
def test_bad_config_is_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SynthConfig(**kwargs)


def test_sign_changes_pixels_where_it_is_drawn() -> None:
    """The same anatomy with and without a sign differs, locally, not everywhere."""
    for part in MURA_BODY_PARTS:
        for sign in SIGNS:
            normal = render_view(str(part), rng=np.random.default_rng(3), height=256, width=256)
            signed = render_view(
                str(part), rng=np.random.default_rng(3), height=256, width=256, sign=sign
            )
            assert normal.dtype == np.float32 and normal.min() >= 0 and normal.max() <= 1
            assert not np.array_equal(normal, signed), (part, sign)


def test_picture_grid_of_every_body_part(tmp_path: Path) -> None:
    """A contact sheet to look at: rows are body parts, columns normal / each sign."""
    columns = [None, *SIGNS]
    fig, axes = plt.subplots(
        len(MURA_BODY_PARTS),
        len(columns) * 2,
        figsize=(2.2 * len(columns) * 2, 2.2 * len(MURA_BODY_PARTS)),
    )
    for row, part in enumerate(MURA_BODY_PARTS):
        for col, sign in enumerate(columns):
            for view in (0, 1):
                rng = np.random.default_rng(1000 * row + 10 * col + view)
                image = render_view(str(part), rng=rng, height=320, width=256, sign=sign, view=view)
                ax = axes[row, col * 2 + view]
                ax.imshow(image, cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{part[3:]} {sign or 'normal'} v{view}", fontsize=7)
    fig.tight_layout()
    out = tmp_path / "synth_grid.png"
    fig.savefig(out, dpi=80)
    plt.close(fig)
    assert out.stat().st_size > 50_000
    print(f"\nsynthetic grid written to {out}")
