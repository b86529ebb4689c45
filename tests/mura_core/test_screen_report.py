"""The HTML screening report: order, inline pictures, escaping, no external requests, and a look."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from collections import defaultdict
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mura_core.cam import overlay_png
from mura_core.notify.summary import NotifyFailure, NotifySummary
from mura_core.records import QuarantineRow
from mura_core.screen_report import ReportImage, ReportStudy, render_html, thumbnail_png, write_html
from mura_core.screen_summary import (
    ModelSummary,
    PartCounts,
    ScreenCounts,
    ScreenSummary,
    SourceSummary,
    read_summary,
    write_summary,
)
from mura_core.synth import SynthArchive
from tests.chromium import SKIP_REASON, find_chromium, screenshot

THRESHOLD = 0.5
SCREENSHOT_COPY = Path("/tmp/mura-report-screenshot-unit.png")


def _fake_cam(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A smooth blob somewhere on the image: what a CAM looks like, without a model."""
    h, w = shape
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    y, x = np.mgrid[0:h, 0:w]
    blob = np.exp(-(((y - cy) / (0.18 * h)) ** 2 + ((x - cx) / (0.18 * w)) ** 2))
    return (blob / blob.max()).astype(np.float32)


@pytest.fixture(scope="module")
def studies(mura_archive: SynthArchive) -> list[ReportStudy]:
    """Studies of the synthetic archive with made-up scores; pictures for flagged ones."""
    rng = np.random.default_rng(11)
    by_study: dict[Path, list[Path]] = defaultdict(list)
    for png in sorted(mura_archive.root.rglob("*.png")):
        by_study[png.parent].append(png)
    out = []
    for n, (folder, files) in enumerate(sorted(by_study.items())[:14]):
        probs = rng.uniform(0.05, 0.95, size=len(files))
        flagged = bool(probs.mean() >= THRESHOLD)
        pictures = []
        for k, path in enumerate(files if flagged else []):
            pixels = np.asarray(Image.open(path).convert("L"))
            cam = _fake_cam(pixels.shape, rng)
            pictures.append(
                ReportImage(
                    image_id=f"im-{n:02d}{k}",
                    view=path.stem,
                    prob=float(probs[k]),
                    thumbnail=thumbnail_png(pixels),
                    cam=overlay_png(pixels, cam) if k != 1 else None,
                )
            )
        out.append(
            ReportStudy(
                study_key=f"st-{n:04d}",
                patient_key=f"pt-{folder.parent.name[-5:]}",
                body_part=folder.parent.parent.name,
                images=len(files),
                mean_prob=float(probs.mean()),
                max_prob=float(probs.max()),
                flagged=flagged,
                label=int("positive" in folder.name) if n % 5 else None,
                pictures=tuple(pictures),
            )
        )
    assert any(s.flagged for s in out) and any(not s.flagged for s in out)
    return out


def _quarantined(path: str, error_type: str, reason: str) -> QuarantineRow:
    return QuarantineRow(path, None, None, "list", error_type, reason)


def _summary(studies: list[ReportStudy], **extra: Any) -> ScreenSummary:
    by_part: dict[str, PartCounts] = {}
    for s in studies:
        c = by_part.get(s.body_part, PartCounts())
        by_part[s.body_part] = PartCounts(
            c.studies + 1, c.images + s.images, c.flagged + int(s.flagged)
        )
    fields: dict[str, Any] = dict(
        screened_at="2026-11-27T16:00:00+00:00",
        source=SourceSummary(kind="mura", digest="ab12cd34ef56"),
        model=ModelSummary(
            uri="models:/mura-cnn@champion",
            name="mura-cnn",
            version="3",
            model="seed-cnn",
            size=64,
        ),
        threshold=THRESHOLD,
        counts=ScreenCounts(
            studies=len(studies),
            images=sum(s.images for s in studies),
            flagged=sum(s.flagged for s in studies),
            quarantined=2,
        ),
        by_body_part=by_part,
        quarantine=(
            _quarantined("fp-91ac", "corrupt", "PNG truncated at byte 812"),
            _quarantined("fp-0b7e", "unsupported", "JPEG 2000 lossy"),
        ),
        seconds=12.3,
        images_per_s=25.2,
        pictures_limit_note="pictures for every flagged study",
    )
    return ScreenSummary(**{**fields, **extra})


class _Tables(HTMLParser):
    """Every table's rows as lists of cell text (enough to read the report's tables back)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _tables(page: str) -> list[list[list[str]]]:
    parser = _Tables()
    parser.feed(page)
    return parser.tables


def test_thumbnail_keeps_aspect_with_longest_side_size() -> None:
    tall = np.tile(np.arange(100, dtype=np.uint8)[:, None], (1, 50))
    wide = np.zeros((300, 400), dtype=np.uint8)
    assert Image.open(io.BytesIO(thumbnail_png(tall))).size == (80, 160)
    small = Image.open(io.BytesIO(thumbnail_png(wide, size=100)))
    assert (small.size, small.mode) == ((100, 75), "L")
    with pytest.raises(ValueError, match="2-D"):
        thumbnail_png(np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        thumbnail_png(np.zeros((8, 8), dtype=np.float32))


def test_flagged_first_then_unflagged_each_by_descending_mean(studies: list[ReportStudy]) -> None:
    page = render_html(_summary(studies), studies)
    order = sorted(studies, key=lambda s: page.index(f">{s.study_key}<"))
    flags = [s.flagged for s in order]
    n_flagged = sum(flags)
    assert flags == [True] * n_flagged + [False] * (len(order) - n_flagged)
    for group in (order[:n_flagged], order[n_flagged:]):
        means = [s.mean_prob for s in group]
        assert means == sorted(means, reverse=True)
    assert page.count('class="card"') == n_flagged


def test_every_picture_is_an_inline_png(studies: list[ReportStudy]) -> None:
    page = render_html(_summary(studies), studies)
    sources = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", page)
    expected = sum(1 + (p.cam is not None) for s in studies for p in s.pictures)
    assert expected > 0 and len(sources) == expected == page.count("<img")
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
        image.verify()
    assert "no CAM" in page


def test_no_external_reference_or_script(studies: list[ReportStudy]) -> None:
    page = render_html(_summary(studies), studies).lower()
    for needle in ("http://", "https://", 'src="/', "<script", "<link", "url(", "@import"):
        assert needle not in page, needle


def _with_pictures(studies: list[ReportStudy]) -> list[ReportStudy]:
    return [s for s in studies if s.pictures]


def test_text_is_escaped(studies: list[ReportStudy]) -> None:
    nasty = ReportStudy(
        study_key="<script>alert(1)</script>",
        patient_key='pt "&" <marquee>',
        body_part="XR_<i>",
        images=1,
        mean_prob=0.99,
        max_prob=0.99,
        flagged=True,
        label=1,
        pictures=(_with_pictures(studies)[0].pictures[0],),
    )
    summary = _summary(
        [*studies, nasty],
        title="<h1>t</h1>",
        quarantine=(_quarantined("<img src=x>", "corrupt", "a & b"),),
        pictures_limit_note="<u>note</u>",
    )
    page = render_html(summary, [*studies, nasty])
    for raw in ("<script>", "<marquee>", "<i>", "<h1>t", "<img src=x>", "<u>"):
        assert raw not in page, raw
    for escaped in (
        "&lt;script&gt;alert(1)&lt;/script&gt;",
        "pt &quot;&amp;&quot; &lt;marquee&gt;",
        "&lt;img src=x&gt;",
        "a &amp; b",
        "&lt;u&gt;note&lt;/u&gt;",
    ):
        assert escaped in page, escaped


def test_header_and_body_part_table(studies: list[ReportStudy]) -> None:
    summary = _summary(studies)
    page = render_html(summary, studies)
    assert "mura-cnn v3" in page and "models:/mura-cnn@champion" in page
    assert "2026-11-27T16:00:00+00:00" in page and "pictures for every flagged study" in page
    table = next(t for t in _tables(page) if t and t[0][:1] == ["body part"])
    assert table[0] == ["body part", "studies", "images", "flagged", "flagged %"]
    rows = {r[0]: r[1:] for r in table[1:]}
    for part, c in summary.by_body_part.items():
        share = f"{100 * c.flagged / c.studies:.1f} %"
        assert rows[part] == [str(c.studies), str(c.images), str(c.flagged), share]
    counts = summary.counts
    assert rows["total"][:3] == [str(counts.studies), str(counts.images), str(counts.flagged)]


def test_study_facts_and_labels(studies: list[ReportStudy]) -> None:
    page = render_html(_summary(studies), studies)
    unflagged = next(t for t in _tables(page) if t and t[0][:1] == ["study"])
    assert unflagged[0][-1] == "ground truth"
    rows = {r[0]: r for r in unflagged[1:]}
    for s in studies:
        if not s.flagged:
            truth = {None: "unknown", 0: "normal", 1: "abnormal"}[s.label]
            assert rows[s.study_key][3:] == [
                str(s.images),
                f"{s.mean_prob:.3f}",
                f"{s.max_prob:.3f}",
                truth,
            ]
    card = page[page.index('class="card"') :].split("</article>", 1)[0]
    top = sorted((s for s in studies if s.flagged), key=lambda s: -s.mean_prob)[0]
    assert f"{top.mean_prob:.3f}" in card and f"{top.max_prob:.3f}" in card
    assert ("ground truth" in card) == (top.label is not None)


def test_quarantine_shows_fifty_rows_and_the_rest_as_a_count(studies: list[ReportStudy]) -> None:
    rows = tuple(_quarantined(f"fp-{i:03d}", "corrupt", "bad") for i in range(120))
    page = render_html(_summary(studies, quarantine=rows), studies)
    assert "fp-049" in page and "fp-050" not in page and "and 70 more" in page
    assert "Quarantine (120)" in page
    # a summary carries the first rows of a long quarantine; the total comes from the counts
    counts = ScreenCounts(studies=1, images=1, flagged=0, quarantined=500)
    page = render_html(_summary(studies, quarantine=rows, counts=counts), studies)
    assert "Quarantine (500)" in page and "and 450 more" in page


def test_empty_report_with_optional_fields_absent_still_renders() -> None:
    summary = ScreenSummary(
        screened_at="2026-11-27T16:00:00+00:00",
        source=SourceSummary(kind="folder", digest="0" * 16),
        model=ModelSummary(uri="/bundles/a", name="a", version=None, model="cnn", size=64),
        threshold=0.5,
        counts=ScreenCounts(),
    )
    page = render_html(summary, [])
    assert "No study reached the threshold." in page and "Every input was scored." in page
    assert "Run time" not in page and "By body part" not in page
    assert "<b>a</b>" in page  # no version suffix for an unregistered model


def test_summary_json_keeps_its_keys_and_round_trips(
    tmp_path: Path, studies: list[ReportStudy]
) -> None:
    summary = _summary(studies, phases={"score": 1.5}, mlflow_run_id="abc", experiment="e")
    path = write_summary(tmp_path, summary)
    assert path == tmp_path / "summary.json"
    data = json.loads(path.read_text())
    assert set(data) == {
        "title", "job", "experiment", "screened_at", "source", "model", "threshold",
        "counts", "by_body_part", "quarantine", "gpus", "images_per_s",
        "pictures_limit_note", "seconds", "phases", "mlflow_run_id",
    }  # fmt: skip
    assert set(data["counts"]) == {"studies", "images", "flagged", "quarantined"}
    assert set(data["model"]) == {"uri", "name", "version", "model", "size", "members"}
    assert data["quarantine"][0] == {
        "path": "fp-91ac",
        "image_id": None,
        "study_key": None,
        "stage": "list",
        "error_type": "corrupt",
        "reason": "PNG truncated at byte 812",
    }
    assert read_summary(tmp_path) == summary
    assert "pictures_limit_note" not in replace(summary, pictures_limit_note=None).to_json()
    minimal = {k: data[k] for k in ("screened_at", "source", "model", "threshold", "counts")}
    back = ScreenSummary.from_json(minimal)
    assert back.quarantine == () and back.by_body_part == {} and back.seconds is None


def test_a_picture_that_is_not_png_is_refused(studies: list[ReportStudy]) -> None:
    bad = ReportImage("im-x", None, 0.9, thumbnail=b"GIF89a...", cam=None)
    study = ReportStudy("st-x", "pt-x", "XR_HAND", 1, 0.9, 0.9, True, None, (bad,))
    with pytest.raises(ValueError, match="PNG"):
        render_html(_summary([study]), [study])


def test_write_html_is_atomic_and_equal_to_render(
    tmp_path: Path, studies: list[ReportStudy]
) -> None:
    summary = _summary(studies)
    path = write_html(tmp_path / "report.html", summary, studies)
    assert path == tmp_path / "report.html"
    assert path.read_text(encoding="utf-8") == render_html(summary, studies)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_report_renders_in_headless_chromium(tmp_path: Path, studies: list[ReportStudy]) -> None:
    if find_chromium() is None:
        pytest.skip(SKIP_REASON)
    page = write_html(tmp_path / "report.html", _summary(studies), studies)
    png = tmp_path / "report.png"
    screenshot(page, png, width=1200, height=2400)
    with Image.open(png) as image:
        assert image.size == (1200, 2400)
    shutil.copyfile(png, SCREENSHOT_COPY)


def test_worklist_notices_are_counted_and_the_waiting_listed(
    tmp_path: Path, studies: list[ReportStudy]
) -> None:
    told = NotifySummary(
        "mllp://ris.example.org:2575",
        sent=5,
        queued=1,
        resent=2,
        already_sent=1,
        pending=1,
        failures=(NotifyFailure("st-0a1b", "AE: refused (application error), HL7 error 207"),),
    )
    summary = _summary(studies, notify=told)
    page = render_html(summary, studies)
    assert "Worklist notices" in page and "mllp://ris.example.org:2575" in page
    assert "5 studies' findings sent" in page and "2 notices from earlier runs" in page
    assert "st-0a1b" in page and "HL7 error 207" in page
    write_summary(tmp_path, summary)
    assert read_summary(tmp_path).notify == told
    assert "Worklist notices" not in render_html(_summary(studies), studies)
