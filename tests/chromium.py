"""Headless Chromium for tests: render an HTML file to a PNG so a page is seen, not just parsed.

A helper, not a test module (pytest collects only test_*.py).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from PIL import Image

NAMES = ("chromium", "chromium-browser", "google-chrome")
SKIP_REASON = "chromium not installed: apt-get install chromium"


def find_chromium() -> str | None:
    """The first Chromium-like browser on PATH, or None."""
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(
    html: Path, png: Path, *, width: int = 1200, height: int = 1600
) -> subprocess.CompletedProcess:
    """Render `html` headless into `png`; AssertionError (with stderr) when it fails or is blank."""
    browser = find_chromium()
    assert browser is not None, SKIP_REASON
    png = Path(png).resolve()
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [
            browser,
            "--headless",
            "--no-sandbox",  # needed when running as root (containers, CI)
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--no-default-browser-check",
            f"--user-data-dir={profile}",
            f"--screenshot={png}",
            f"--window-size={width},{height}",
            Path(html).resolve().as_uri(),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"chromium exited {result.returncode}:\n{result.stderr}"
    assert png.is_file() and png.stat().st_size > 0, f"chromium wrote no PNG:\n{result.stderr}"
    with Image.open(png) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1)  # None when more than one
    assert colours is None, f"screenshot is a single colour {colours}:\n{result.stderr}"
    return result
