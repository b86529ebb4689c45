"""OHIF Viewer v3 in headless Chromium, for the tests that look at our results where
radiologists work (a helper, not a test module).

`viewer_or_skip()` gives OHIF's `dist/` (fetched with npm into ~/.cache/mura/ohif the first
time) or skips, saying why (no Chromium, no npm, no registry). `OhifPage` drives one tab:
open a study and wait until its first image is drawn, list the study browser's series,
open a series by double-clicking its thumbnail, read what the viewport draws over the
image (our SR's text boxes), open a heatmap (answering OHIF's "open this Segmentation?")
and read what its segmentation service has drawn on the viewport, collapse and expand the
study browser, and take screenshots. `tour` is what a radiologist does with a screened
study (the study, a Secondary Capture, the SR, a heatmap), photographed: the OHIF test's,
and the docs' pictures:

    mura viewer dicomweb+http://127.0.0.1:8042/dicom-web    # prints http://127.0.0.1:PORT/
    python -m tests.ohif http://127.0.0.1:PORT STUDY_UID docs/img
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobs.ohif import OHIF_VERSION, OhifError, cached_dist, ohif_dist
from mura_core.results import (
    HEATMAP_SERIES_DESCRIPTION,
    SC_SERIES_DESCRIPTION,
    SR_SERIES_DESCRIPTION,
)
from tests.cdp import Browser, Page
from tests.chromium import SKIP_REASON, find_chromium

SHOTS_ENV = "MURA_OHIF_SHOTS"  # a folder (docs/img) the screenshots are copied into
THUMBNAILS = '[data-cy^="study-browser-thumbnail"]'
SEG_PROMPT = "Do you want to open this Segmentation?"  # OHIF's, once a SEG has loaded
SEGMENTS = '[data-cy="data-row"]'  # the segmentation panel's rows, one a segment
# What OHIF's segmentation service has on the active viewport (window.services, OHIF 3.x):
# per segmentation, its label, its segments' labels, whether it is shown, how many pixels
# of its labelmap are set, its SEG series, and the SOP Instance UID of the image shown.
ON_VIEWPORT = """(() => {
  const { segmentationService, viewportGridService, displaySetService } = window.services;
  const viewportId = viewportGridService.getActiveViewportId();
  const viewport = window.cornerstone.getEnabledElementByViewportId(viewportId).viewport;
  const shown = window.cornerstone.metaData.get(
    'generalImageModule', viewport.getCurrentImageId()) || {};
  return segmentationService.getSegmentationRepresentations(viewportId).map(rep => {
    const seg = segmentationService.getSegmentation(rep.segmentationId);
    let labelled = 0;
    for (const id of seg.representationData.Labelmap?.imageIds || []) {
      const image = window.cornerstone.cache.getImage(id);
      for (const v of image ? image.getPixelData() : []) { if (v) labelled++; }
    }
    const ds = displaySetService.getDisplaySetByUID(rep.segmentationId) || {};
    return { label: seg.label, visible: rep.visible, labelled,
      segments: Object.values(seg.segments).filter(Boolean).map(s => s.label),
      series: ds.SeriesInstanceUID, image: shown.sopInstanceUID };
  });
})()"""
DRAWN = (
    "(() => { const o = document.querySelector('[data-cy=viewport-overlay-bottom-left]');"
    " return !!o && o.innerText.includes('W:') && document.querySelectorAll('canvas').length"
    " > 0; })()"
)


def viewer_or_skip() -> Path:
    """OHIF's dist/ (from the cache, or fetched now), or skip with the reason."""
    if find_chromium() is None:
        pytest.skip(SKIP_REASON)
    if cached_dist() is None and shutil.which("npm") is None:
        pytest.skip(f"OHIF {OHIF_VERSION} is not cached and npm is missing: apt-get install npm")
    try:
        return ohif_dist()
    except OhifError as exc:  # no registry (offline): nothing to look at
        pytest.skip(f"OHIF {OHIF_VERSION} could not be fetched: {exc}")


@dataclass
class OhifPage:
    page: Page
    shots: Path  # where screenshots go (and are copied on to $MURA_OHIF_SHOTS)

    def open_study(self, url: str, timeout: float = 180.0) -> None:
        """Go to a study's viewer page; wait until its first image and thumbnails are drawn."""
        self.page.goto(url)
        self.page.wait_for(DRAWN, timeout, "the first image drawn (the W/L overlay)")
        self.page.wait_for(f"document.querySelectorAll('{THUMBNAILS}').length > 0", 180)
        self.settle()

    def settle(self, seconds: float = 2.0) -> None:
        """Let the viewer finish drawing (thumbnails, text boxes) before it is read."""
        time.sleep(seconds)

    def series(self) -> list[str]:
        """The study browser's series, one line each: modality, description, number, count."""
        texts = self.page.evaluate(
            f"[...document.querySelectorAll('{THUMBNAILS}')].map(e => e.innerText)"
        )
        return [" | ".join(t.split("\n")) for t in texts]

    def _centre(self, selector: str, text: str = "") -> tuple[float, float]:
        found = self.page.evaluate(
            f"(() => {{ const e = [...document.querySelectorAll('{selector}')]"
            f".find(e => e.innerText.includes({json.dumps(text)})); if (!e) return null;"
            " e.scrollIntoView(); const r = e.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        assert found, f"no {selector} showing {text!r} on the page; series: {self.series()}"
        return found[0], found[1]

    def open_series(self, description: str) -> None:
        """Double-click the thumbnail of the series with `description` into the viewport."""
        self.page.click(*self._centre(THUMBNAILS, description), count=2)
        self.page.wait_for(
            "document.querySelector('[data-cy=viewport-grid]').innerText.includes("
            f"{json.dumps(description[:20])}) || document.querySelectorAll('svg text').length",
            180,
            f"the viewport to show {description!r}",
        )
        self.settle()

    def drawn_text(self, timeout: float = 180.0) -> str:
        """What the viewport draws over the image (annotation text boxes), once there is some."""
        script = (  # a text box is one <text>, one <tspan> a line
            "[...document.querySelectorAll('svg text')].flatMap(t => t.children.length ?"
            " [...t.children].map(c => c.textContent) : [t.textContent]).join('\\n')"
        )
        self.page.wait_for(script, timeout, "text drawn over the image")
        return str(self.page.evaluate(script))

    def viewport_text(self) -> str:
        grid = "document.querySelector('[data-cy=viewport-grid]').innerText"
        return str(self.page.evaluate(grid))

    def collapse_study_browser(self) -> None:
        self.page.click(*self._centre('[data-cy="side-panel-header-left"]'))
        self.settle()

    def expand_study_browser(self) -> None:
        self.page.click(*self._centre('[data-cy="seriesList-btn"]'))
        self.page.wait_for(f"document.querySelectorAll('{THUMBNAILS}').length > 0", 60)
        self.settle()

    def scroll_study_browser_to_end(self) -> None:
        """Scroll the study browser down to its last series (ours come last)."""
        self.page.evaluate(
            f"[...document.querySelectorAll('{THUMBNAILS}')].pop().scrollIntoView(false)"
        )
        self.settle(1.0)

    def open_heatmap(self, description: str) -> list[dict]:
        """Double-click the first thumbnail of a heatmap (SEG) series: OHIF draws it over its
        source image and, once loaded, asks whether to open it; answer Yes. What its
        segmentation service then has on the viewport (ON_VIEWPORT), once there is some."""
        self.page.click(*self._centre(THUMBNAILS, description), count=2)
        self.page.wait_for(
            f"document.body.innerText.includes({json.dumps(SEG_PROMPT)})",
            180,
            "OHIF to load the Segmentation and ask to open it",
        )
        yes = self.page.evaluate(
            "(() => { const b = [...document.querySelectorAll('button')]"
            ".find(b => b.innerText.trim() === 'Yes'); const r = b.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        self.page.click(*yes)
        drawn = self.page.wait_for(
            f"(() => {{ const s = {ON_VIEWPORT}; return s.length && s; }})()",
            60,
            "a segmentation drawn on the viewport",
        )
        self.settle()
        return list(drawn)

    def segment_labels(self) -> list[str]:
        """Open the segmentation panel: the labels of the segments it lists."""
        self.page.click(*self._centre('[data-cy="panelSegmentation-btn"]'))
        self.page.wait_for(f"document.querySelectorAll('{SEGMENTS}').length > 0", 60)
        self.settle()
        rows = self.page.evaluate(
            f"[...document.querySelectorAll('{SEGMENTS}')].map(e => e.innerText)"
        )
        return [row.split("\n")[-1] for row in rows]

    def screenshot(self, name: str) -> Path:
        png = self.page.screenshot(self.shots / name)
        if os.environ.get(SHOTS_ENV):
            folder = Path(os.environ[SHOTS_ENV])
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(png, folder / name)
        return png


@dataclass(frozen=True)
class Tour:
    """What `tour` saw: the study browser's series, the viewport over a Secondary Capture,
    the text our SR draws (one line each), what OHIF drew of a heatmap (ON_VIEWPORT) and the
    segments its panel lists, and the screenshots."""

    series: list[str]
    capture: str
    drawn: list[str]
    heatmap: list[dict]
    segments: list[str]
    shots: list[Path]


def tour(ohif: OhifPage, study_url: str) -> Tour:
    """Open a screened study (its study browser scrolled down to our series), then its
    first Secondary Capture, then our SR (with the study browser collapsed, so that its
    text box has room), then its first heatmap, opened, with the segmentation panel: a
    screenshot of each. A study that was not flagged has the SR only."""
    ohif.open_study(study_url)
    series = ohif.series()
    ohif.scroll_study_browser_to_end()
    shots = [ohif.screenshot("ohif_study.png")]
    flagged = any(SC_SERIES_DESCRIPTION in s for s in series)
    capture, heatmap, segments = "", [], []
    if flagged:
        ohif.open_series(SC_SERIES_DESCRIPTION)
        capture = ohif.viewport_text()
        shots.append(ohif.screenshot("ohif_sc.png"))
    ohif.open_series(SR_SERIES_DESCRIPTION)
    drawn = ohif.drawn_text().splitlines()
    ohif.collapse_study_browser()
    shots.append(ohif.screenshot("ohif_sr.png"))
    if flagged:
        ohif.expand_study_browser()
        heatmap = ohif.open_heatmap(HEATMAP_SERIES_DESCRIPTION)
        segments = ohif.segment_labels()
        shots.append(ohif.screenshot("ohif_heatmap.png"))
    return Tour(series, capture, drawn, heatmap, segments, shots)


def main(argv: list[str]) -> int:
    """`python -m tests.ohif VIEWER_URL STUDY_UID OUT`: the tour of a study served by
    `mura viewer`, its screenshots into OUT."""
    url, study, out = argv
    with Browser.launch() as browser:
        ohif = OhifPage(browser.page(), Path(out))
        seen = tour(ohif, f"{url.rstrip('/')}/viewer?StudyInstanceUIDs={urllib.parse.quote(study)}")
    print("\n".join([*seen.series, "", seen.capture, "", *seen.drawn, "", *seen.segments]))
    print(json.dumps(seen.heatmap, indent=1))
    print("\n".join(str(p) for p in seen.shots))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
