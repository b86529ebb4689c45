"""Every screening run is a monitoring point: synthetic nights against the trained model's
reference (real local Ray, real SQLite MLflow, the session's trained model).

Five nights drawn like the model's validation data raise no alert; a night whose images
are intensity-inverted and a night of fingers only alert, each with its reason, in the
summary, the MLflow tag `mura.alert` and the report's banner.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from jobs.cli import main as cli
from mura_core.body_parts import BodyPart
from mura_core.monitoring.snapshot import REFERENCE_FILE, load_reference
from mura_core.synth import synthesize
from pipelines.registry.model_store import resolve_model
from pipelines.registry.tracking import use_tracking
from pipelines.screen.config import ScreenConfig
from pipelines.screen.result import ScreenResult
from pipelines.screen.run import run_screen
from tests.pipelines import learning

if TYPE_CHECKING:
    from tests.pipelines.conftest import Trained

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def trained(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The session's model in this module's own copy of its store: the runs written here
    (screening nights, alerts) are seen by no other module, and theirs not here."""
    return trained.own_store(tmp_path_factory.mktemp("store"))


NIGHT_STUDIES = 40


def night_archive(root: Path, seed: int, *, fingers: bool = False, invert: bool = False) -> Path:
    """A night like the training data (another seed), or fingers only, or inverted PNGs."""
    parts = (BodyPart.FINGER,) if fingers else learning.ARCHIVE.body_parts
    cfg = dataclasses.replace(learning.ARCHIVE, studies=NIGHT_STUDIES, seed=seed, body_parts=parts)
    made = synthesize(root, cfg)
    if invert:
        for path in root.rglob("*.png"):
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("L"))
            Image.fromarray(255 - pixels).save(path)
    return made.root


def screen_night(trained: Trained, source: Path, out: Path) -> ScreenResult:
    return run_screen(
        ScreenConfig(
            source=source,
            out=out,
            models=(f"models:/test-cnn/{trained.result.version}",),
            tracking_uri=trained.uri,
            experiment="test-monitor",
            pictures=2,
        )
    )


@dataclass(frozen=True)
class Nights:
    results: dict[str, ScreenResult]
    monitor_before: tuple[int, str]  # `mura monitor`'s exit status and output after 5 nights
    monitor_after: tuple[int, str]  # … and after the inverted and the finger nights
    plot: Path
    page: Path


def _monitor(trained: Trained, *extra: str) -> tuple[int, str]:
    """`mura monitor` in this process: its exit status and what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli(
            [
                "monitor",
                *("--tracking-uri", trained.uri, "--experiment", "test-monitor"),
                *extra,
            ]
        )
    return status, out.getvalue()


@pytest.fixture(scope="module")
def nights(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Nights:
    root = tmp_path_factory.mktemp("nights")
    results = {}
    for i in range(5):
        source = night_archive(root / f"same-{i}", 100 + i)
        results[f"same-{i}"] = screen_night(trained, source, root / f"report-same-{i}")
    before = _monitor(trained)
    results["inverted"] = screen_night(
        trained, night_archive(root / "inverted", 200, invert=True), root / "report-inverted"
    )
    results["fingers"] = screen_night(
        trained, night_archive(root / "fingers", 300, fingers=True), root / "report-fingers"
    )
    plot, page = root / "monitor.png", root / "monitor.html"
    after = _monitor(trained, "--plot", str(plot), "--html", str(page))
    return Nights(results, before, after, plot, page)


def test_the_trained_model_carries_its_reference(trained: Trained, tmp_path: Path) -> None:
    use_tracking(trained.uri)
    folder = resolve_model(trained.result.model_uri, cache=tmp_path).folder
    reference = load_reference(folder)
    assert reference is not None and (folder / REFERENCE_FILE).is_file()
    assert reference.studies > 20 and set(reference.body_parts) == {"XR_FOREARM"}
    assert reference.threshold == pytest.approx(trained.result.threshold)
    assert reference.inputs is not None and reference.inputs.images >= reference.studies
    assert 0 < np.median(reference.inputs.pixel_mean) < 255
    run = MlflowClient(trained.uri).get_run(trained.result.run_id)
    assert run.data.metrics["reference.flag_rate"] == pytest.approx(reference.flag_rate)


def test_nights_like_the_validation_data_raise_no_alert(nights: Nights, trained: Trained) -> None:
    client = MlflowClient(trained.uri)
    for name in (f"same-{i}" for i in range(5)):
        result = nights.results[name]
        monitoring = result.summary.monitoring
        assert monitoring is not None and monitoring.reference, name
        assert monitoring.alerts == (), (name, monitoring.alerts, monitoring.figures)
        run = client.get_run(result.run_id)
        assert "mura.alert" not in run.data.tags
        metrics = run.data.metrics
        for key in ("flag_rate", "flag_rate.XR_FOREARM", "score.p50", "drift.score_psi"):
            assert key in metrics, (name, key)
        windowing = sum(v for k, v in metrics.items() if k.startswith("input.windowing."))
        assert windowing == result.summary.counts.images
        assert "Monitoring alert" not in (result.out / "report.html").read_text()


def test_an_inverted_night_alerts_on_its_intensities(nights: Nights, trained: Trained) -> None:
    result = nights.results["inverted"]
    monitoring = result.summary.monitoring
    assert monitoring is not None
    assert monitoring.alerts[0].startswith("input intensities drifted"), monitoring.alerts
    assert monitoring.figures["drift.intensity_ks"] > 0.9
    tag = MlflowClient(trained.uri).get_run(result.run_id).data.tags["mura.alert"]
    assert tag == monitoring.alert
    page = (result.out / "report.html").read_text()
    assert "Monitoring alert" in page and "input intensities drifted" in page
    summary = json.loads((result.out / "summary.json").read_text())
    assert summary["monitoring"]["alerts"] == list(monitoring.alerts)


def test_a_night_of_fingers_alerts_on_the_body_part_mix(nights: Nights) -> None:
    monitoring = nights.results["fingers"].summary.monitoring
    assert monitoring is not None
    assert any(
        a.startswith("body-part mix changed") and "XR_FINGER 100%" in a for a in monitoring.alerts
    ), monitoring.alerts
    assert monitoring.figures["drift.mix_cramers_v"] > 0.9


def test_mura_monitor_exits_0_before_the_bad_nights_and_3_after(nights: Nights) -> None:
    status, out = nights.monitor_before
    assert status == 0, out
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["date", "run", "job", "studies"]
    assert len(lines) == 1 + 5 + 1 and lines[-1].endswith("in band")
    assert all(line.rstrip().endswith("in band") for line in lines[1:6])
    status, out = nights.monitor_after
    assert status == 3, out
    lines = out.splitlines()
    assert "input intensities drifted" in lines[6] and "body-part mix changed" in lines[7]
    assert lines[-1].startswith("latest run") and "ALERT: " in lines[-1]
    assert nights.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = nights.page.read_text()
    assert 'class="alert"' in page and "data:image/png;base64," in page
