"""Reads of radiologists: the labels file, periods, realized figures against sklearn."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, confusion_matrix, roc_auc_score

from mura_core.monitoring.feedback import FeedbackError, period_of, read_labels, realized


def test_labels_file_rows_are_used_or_named_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "reads.csv"
    path.write_text(
        "StudyInstanceUID,Label,Read_Date\n".replace("StudyInstanceUID", "study_instance_uid")
        + "1.2.3,abnormal,2026-12-01\n"
        + "1.2.4,0,2026-12-02\n"
        + ",1,2026-12-02\n"
        + "1.2.5,maybe,2026-12-02\n"
        + "1.2.6,1,yesterday\n"
    )
    reads, problems = read_labels(path)
    assert [(r.identifier, r.label) for r in reads] == [("1.2.3", 1), ("1.2.4", 0)]
    assert reads[0].read_date == dt.date(2026, 12, 1)
    assert [(p.line, p.reason.split()[0]) for p in problems] == [
        (4, "no"),
        (5, "label"),
        (6, "read_date"),
    ]


def test_a_read_names_its_study_by_uid_or_by_accession_number(tmp_path: Path) -> None:
    path = tmp_path / "reads.csv"
    path.write_text(
        "Accession_Number,StudyInstanceUID,Label,Read_Date\n".replace(
            "StudyInstanceUID", "study_instance_uid"
        )
        + "ACC1,1.2.3,1,2026-12-01\n"  # both: the UID is preferred
        + "ACC2,,0,2026-12-01\n"
        + ",,0,2026-12-01\n"
    )
    reads, problems = read_labels(path)
    assert [(r.identifier, r.by) for r in reads] == [("1.2.3", "study"), ("ACC2", "accession")]
    assert [(p.line, p.reason) for p in problems] == [
        (4, "no study_instance_uid or accession_number")
    ]


def test_a_file_without_the_columns_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "reads.csv"
    path.write_text("patient,label\nA1,1\n")
    with pytest.raises(
        FeedbackError, match="no column study_instance_uid or accession_number, read_date"
    ):
        read_labels(path)
    with pytest.raises(FeedbackError, match="not found"):
        read_labels(tmp_path / "missing.csv")


def test_periods() -> None:
    day = dt.date(2026, 12, 6)  # a Sunday: ISO week 49
    assert period_of(day, "week") == "2026-W49"
    assert period_of(day + dt.timedelta(days=1), "week") == "2026-W50"
    assert period_of(day, "month") == "2026-12" and period_of(day, "day") == "2026-12-06"


def test_realized_figures_equal_sklearn_and_their_ci_holds_them() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 120)
    p = np.clip(0.35 * y + 0.65 * rng.random(120), 0, 1)
    f = p > 0.5
    tn, fp, fn, tp = confusion_matrix(y, f).ravel()
    found = realized(y, p, f)
    expected = {
        "sensitivity": tp / (tp + fn),
        "specificity": tn / (tn + fp),
        "ppv": tp / (tp + fp),
        "npv": tn / (tn + fn),
        "auroc": roc_auc_score(y, p),
        "kappa": cohen_kappa_score(y, f),
    }
    for name, value in expected.items():
        e = found[name]
        assert e.value == pytest.approx(value), name
        assert e.low is not None and e.high is not None
        assert e.low <= e.value <= e.high, name
    none_read_abnormal = realized([0, 0, 0], [0.2, 0.7, 0.1], [False, True, False])
    assert none_read_abnormal["sensitivity"].value is None
    assert none_read_abnormal["specificity"].value == pytest.approx(2 / 3)
