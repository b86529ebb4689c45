"""`mura monitor`'s judgement of nights whose model has no reference, and its small parsers."""

from __future__ import annotations

import datetime as dt

import pytest

from mura_core.monitoring.drift import Bands
from pipelines.monitor.trends import (
    MonitorError,
    Point,
    exit_status,
    format_table,
    judge_without_reference,
    parse_since,
)

T0 = dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC)


def point(day: int, rate: float, *, studies: int = 100, reference: bool = False, alert=None):
    return Point(
        run_id=f"{day:032x}",
        when=T0 + dt.timedelta(days=day),
        job="nightly",
        studies=studies,
        reference=reference,
        metrics={"flag_rate": rate, "studies": float(studies)},
        alert=alert,
    )


def test_a_night_without_reference_is_judged_against_the_median_of_the_nights_before() -> None:
    rates = [0.30, 0.32, 0.28, 0.31, 0.55, 0.29]
    judged = judge_without_reference([point(i, r) for i, r in enumerate(rates)], Bands())
    assert [p.alert is None for p in judged] == [True, True, True, True, False, True]
    assert judged[4].alert == (
        "flag rate 55% is +25% from the median of the 4 nights before (no reference: band ±15%)"
    )
    assert exit_status(judged) == 0 and exit_status(judged[:5]) == 3


def test_too_few_nights_or_studies_are_not_judged_and_reference_runs_keep_their_verdict() -> None:
    few = judge_without_reference([point(0, 0.3), point(1, 0.3), point(2, 0.9)], Bands())
    assert all(p.alert is None for p in few)
    small = [point(i, 0.3) for i in range(4)] + [point(4, 0.9, studies=5)]
    assert judge_without_reference(small, Bands())[-1].alert is None
    kept = [point(i, 0.3) for i in range(4)] + [point(4, 0.9, reference=True)]
    assert judge_without_reference(kept, Bands())[-1].alert is None  # its own bands judged it
    table = format_table(judge_without_reference(kept, Bands()))
    assert table.splitlines()[-1].endswith("in band")
    assert table.splitlines()[1].endswith("no reference")


def test_since_takes_a_date_and_refuses_nonsense_in_one_line() -> None:
    assert parse_since("2026-12-01") == dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    assert parse_since(None) is None
    with pytest.raises(MonitorError, match="expected a date such as 2026-12-01"):
        parse_since("yesterday")
