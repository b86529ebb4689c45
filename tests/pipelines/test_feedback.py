"""Ground truth arrives: a nightly run on a DICOM archive (the session's trained model, a
real local Ray, a real SQLite MLflow), then `mura feedback` with radiologists' reads, by
StudyInstanceUID or by accession number. Its realized figures equal those computed by hand
from the report and the reads; unmatched and unusable reads are counted, never dropped
silently, and no identifier reaches MLflow."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from jobs.cli import main as cli
from mura_core.privacy import Pseudonymizer
from mura_core.synth import accession_number, study_uid, synthesize
from tests.pipelines import learning

if TYPE_CHECKING:
    from tests.pipelines.conftest import Trained

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def trained(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The session's model in this module's own copy of its store: the runs written here
    (feedback periods) are seen by no other module, and theirs not here."""
    return trained.own_store(tmp_path_factory.mktemp("store"))


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli(list(argv))
    return status, out.getvalue()


def test_feedback_gives_the_realized_figures_computed_by_hand(
    trained: Trained, tmp_path: Path
) -> None:
    cfg = dataclasses.replace(learning.ARCHIVE, studies=40, seed=41, format="dicom")
    archive = synthesize(tmp_path / "archive", cfg)
    state, uri = tmp_path / "state", trained.uri
    model = f"models:/test-cnn/{trained.result.version}"
    status, _ = run(
        "nightly", str(archive.root), "--state", str(state), "--model", model,
        "--tracking-uri", uri, "--pictures", "0",
    )  # fmt: skip
    assert status == 0
    # the reads: two weeks, a third of them by accession number only; three studies nobody
    # screened (two UIDs, one accession number), one unusable row
    labels = tmp_path / "reads.csv"
    truth = {study_uid(cfg, s): s.label for s in archive.studies}
    accession = {study_uid(cfg, s): accession_number(cfg, s) for s in archive.studies}
    dates = {uid: ("2026-11-30" if i % 2 else "2026-12-08") for i, uid in enumerate(truth)}
    with labels.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["study_instance_uid", "accession_number", "label", "read_date"])
        writer.writerows(
            ("", accession[uid], label, dates[uid]) if i % 3 == 0 else (uid, "", label, dates[uid])
            for i, (uid, label) in enumerate(truth.items())
        )
        writer.writerows((f"1.2.3.{i}", "", 1, "2026-12-08") for i in range(2))
        writer.writerow(["", "ACC-NOT-SCREENED", 0, "2026-12-08"])
        writer.writerow([next(iter(truth)), "", "maybe", "2026-12-08"])
    status, out = run("feedback", str(labels), "--state", str(state), "--tracking-uri", uri)
    assert status == 0, out
    assert f"{len(truth)} reads matched screened studies, 3 did not" in out
    assert "line 45: not used: label 'maybe'" in out
    unmatched = state / "feedback" / "unmatched.csv"
    assert stat.S_IMODE(unmatched.stat().st_mode) == 0o600
    rows = list(csv.DictReader(unmatched.open()))
    assert [(r["identifier"], r["kind"]) for r in rows] == [
        ("1.2.3.0", "study"),
        ("1.2.3.1", "study"),
        ("ACC-NOT-SCREENED", "accession"),
    ]
    assert rows[-1]["reason"] == "no screened study has this accession number"

    # by hand: the report's studies, keyed as screening keyed them
    pseudo = Pseudonymizer.from_site()
    studies = pq.read_table(next((state / "reports").glob("*/studies.parquet"))).to_pandas()
    studies = studies.set_index("study_key")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mura-monitor")
    runs = {r.data.tags["mura.period"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"2026-W49", "2026-W50"}
    for week, day in (("2026-W49", "2026-11-30"), ("2026-W50", "2026-12-08")):
        uids = [u for u in truth if dates[u] == day]
        rows = studies.loc[[pseudo.study(u) for u in uids]]
        y = np.array([truth[u] for u in uids])
        f = rows.flagged.to_numpy().astype(int)
        tp, fn = int(((f == 1) & (y == 1)).sum()), int(((f == 0) & (y == 1)).sum())
        tn, fp = int(((f == 0) & (y == 0)).sum()), int(((f == 1) & (y == 0)).sum())
        m = runs[week].data.metrics
        assert m["realized.studies"] == len(uids)
        assert m["realized.sensitivity"] == pytest.approx(tp / (tp + fn))
        assert m["realized.specificity"] == pytest.approx(tn / (tn + fp))
        if tp + fp:
            assert m["realized.ppv"] == pytest.approx(tp / (tp + fp))
        if tn + fn:
            assert m["realized.npv"] == pytest.approx(tn / (tn + fn))
        assert m["realized.auroc"] == pytest.approx(roc_auc_score(y, rows.mean_prob))
        assert m["realized.kappa"] == pytest.approx(cohen_kappa_score(y, f))
        assert m["realized.sensitivity_ci_low"] <= m["realized.sensitivity"]
        logged = " ".join(
            [*map(str, runs[week].data.params.values()), *runs[week].data.tags.values()]
        )
        assert not any(u in logged for u in [*truth, *accession.values()])
    # monitor shows the weeks beside the runs
    status, out = run("monitor", "--tracking-uri", uri, "--experiment", "mura-screen")
    assert "realized performance (mura feedback):" in out and "2026-W50" in out
