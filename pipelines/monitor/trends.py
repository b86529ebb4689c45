"""`mura monitor`: the screening runs of an experiment as a time series, for a person on
Monday morning and for cron.

1. `load_points` reads the finished runs of the screening experiment (oldest first, from
   `--since`): per run its date, job, studies, flag rate (overall and per body part), score
   quantiles, drift figures and its `mura.alert` tag, as `screen` and `nightly` logged them
   (`pipelines/monitor/screening.py`), read back as a `mura_core.run_contract.ScreenRunRecord`.
2. Runs whose model carried no reference (`mura.reference=false`) have no drift figures:
   they are compared with the nights before them instead. A night whose flag rate is
   further than `Bands.flag_rate` from the median of the earlier nights (at least three)
   alerts, with that reason.
3. `format_table` prints one line per run; `plot` draws the trends (flag rate per body
   part, score quantiles, drift figures with their bands); `write_html` puts both in a page.
4. The exit status for cron: 0 when the latest run is in band, 3 when it alerts.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.tracking import MlflowClient

from mura_core.errors import MuraError
from mura_core.monitoring.drift import Bands
from mura_core.outputs import write_text_atomic
from mura_core.run_contract import (
    FLAG_RATE,
    FeedbackPeriod,
    Job,
    ScreenRunRecord,
    Tag,
    part_flag_rates,
)

DEFAULT_EXPERIMENT = "mura-screen"
EXIT_ALERT = 3
PEERS_MIN = 3  # earlier nights needed to judge a night without a reference


class MonitorError(MuraError):
    """No such experiment, no finished runs, a bad date."""


@dataclass(frozen=True)
class Point:
    """One screening run as `mura monitor` shows it (read as a `ScreenRunRecord`): `metrics`
    are its monitoring figures, by their flat names."""

    run_id: str
    when: dt.datetime
    job: str
    studies: int
    reference: bool
    metrics: dict[str, float] = field(default_factory=dict)
    alert: str | None = None

    @property
    def flag_rate(self) -> float | None:
        return self.metrics.get(FLAG_RATE)

    def parts(self) -> dict[str, float]:
        """Flag rate per body part."""
        return part_flag_rates(self.metrics)


def parse_since(text: str | None) -> dt.datetime | None:
    """`--since 2026-12-01` (UTC midnight) or a full ISO timestamp; one-line error else."""
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise MonitorError(f"--since {text!r}: expected a date such as 2026-12-01") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def load_points(
    client: MlflowClient, experiment: str, since: dt.datetime | None, bands: Bands
) -> list[Point]:
    """The experiment's finished runs from `since`, oldest first, nights without a reference
    judged against the nights before them."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
        raise MonitorError(
            f"no experiment {experiment!r} in {client.tracking_uri} (experiments: {names}): "
            "screen first, or name the screening experiment with --experiment"
        )
    query = f"attributes.start_time >= {int(since.timestamp() * 1000)}" if since else ""
    runs = client.search_runs(
        [found.experiment_id], query, max_results=5000, order_by=["attributes.start_time ASC"]
    )
    points = [_point(run) for run in runs if run.info.status == "FINISHED"]
    if not points:
        when = f" since {since:%Y-%m-%d}" if since else ""
        raise MonitorError(f"experiment {experiment!r} has no finished screening runs{when}")
    return judge_without_reference(points, bands)


def _point(run: Any) -> Point:
    record = ScreenRunRecord.from_run(run.data.metrics, run.data.tags, run.data.params)
    return Point(
        run_id=run.info.run_id,
        when=dt.datetime.fromtimestamp(run.info.start_time / 1000, dt.UTC),
        job=record.job,
        studies=record.studies,
        reference=bool(record.reference),
        metrics=dict(record.figures),
        alert=record.alert,
    )


def judge_without_reference(points: Sequence[Point], bands: Bands) -> list[Point]:
    """A night whose model has no reference, against the median flag rate of the nights
    before it (at least PEERS_MIN of them, each with at least `bands.min_studies`)."""
    out: list[Point] = []
    for point in points:
        earlier = [
            p.flag_rate for p in out if p.flag_rate is not None and p.studies >= bands.min_studies
        ]
        rate = point.flag_rate
        if (
            point.reference
            or point.alert
            or rate is None
            or point.studies < bands.min_studies
            or len(earlier) < PEERS_MIN
        ):
            out.append(point)
            continue
        median = float(np.median(earlier))
        if abs(rate - median) > bands.flag_rate:
            reason = (
                f"flag rate {rate:.0%} is {rate - median:+.0%} from the median of the "
                f"{len(earlier)} nights before (no reference: band ±{bands.flag_rate:.0%})"
            )
            point = replace(point, alert=reason)
        out.append(point)
    return out


REALIZED = ("sensitivity", "specificity", "ppv", "npv", "auroc", "kappa")


def load_realized(client: MlflowClient, experiment: str) -> list[FeedbackPeriod]:
    """The periods `mura feedback` logged, oldest first (none: no experiment yet)."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs(
        [found.experiment_id], f"tags.`{Tag.JOB}` = '{Job.FEEDBACK}'", max_results=5000
    )
    out = [
        FeedbackPeriod.from_run(r.data.metrics, r.data.tags)
        for r in runs
        if Tag.PERIOD in r.data.tags
    ]
    return sorted(out, key=lambda r: r.name)


def realized_cell(period: FeedbackPeriod, name: str) -> str:
    """`0.80 [0.70-0.90]`: a realized figure and its CI; `-` where it was not logged."""
    estimate = period.figures.get(name)
    if estimate is None or estimate.value is None:
        return "-"
    low, high = estimate.low, estimate.high
    return f"{estimate.value:.2f}" + (f" [{low:.2f}-{high:.2f}]" if low is not None else "")


def format_realized(periods: Sequence[FeedbackPeriod]) -> str:
    head = f"{'period':<10} {'studies':>7}  " + "  ".join(f"{n:<17}" for n in REALIZED)
    lines = ["realized performance (mura feedback):", head]
    for p in periods:
        cells = "  ".join(realized_cell(p, n).ljust(17) for n in REALIZED)
        lines.append(f"{p.name:<10} {p.studies:>7}  {cells}  {p.alert or ''}".rstrip())
    return "\n".join(lines)


def exit_status(points: Sequence[Point], realized: Sequence[FeedbackPeriod] = ()) -> int:
    """0 when the latest run (and the latest period of reads) is in band, EXIT_ALERT when
    either alerts."""
    latest_run = bool(points and points[-1].alert)
    latest_reads = bool(realized and realized[-1].alert)
    return EXIT_ALERT if latest_run or latest_reads else 0


_COLUMNS = (
    ("date", lambda p: f"{p.when:%Y-%m-%d %H:%M}"),
    ("run", lambda p: p.run_id[:8]),
    ("job", lambda p: p.job),
    ("studies", lambda p: str(p.studies)),
    ("flag rate", lambda p: _pct(p.flag_rate)),
    ("score PSI", lambda p: _f(p.metrics.get("drift.score_psi"))),
    ("score KS", lambda p: _f(p.metrics.get("drift.score_ks"))),
    ("intensity PSI", lambda p: _f(p.metrics.get("drift.intensity_psi"))),
    ("intensity KS", lambda p: _f(p.metrics.get("drift.intensity_ks"))),
    ("mix V", lambda p: _f(p.metrics.get("drift.mix_cramers_v"))),
    ("alert", lambda p: p.alert or ("in band" if p.reference else "no reference")),
)


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def table(points: Sequence[Point]) -> list[dict[str, str]]:
    return [{name: cell(p) for name, cell in _COLUMNS} for p in points]


def format_table(points: Sequence[Point]) -> str:
    rows = table(points)
    names = [name for name, _ in _COLUMNS]
    widths = {n: max(len(n), *(len(r[n]) for r in rows)) for n in names[:-1]}
    lines = ["  ".join(n.ljust(widths.get(n, 0)) for n in names).rstrip()]
    for row in rows:
        lines.append("  ".join(row[n].ljust(widths.get(n, 0)) for n in names).rstrip())
    return "\n".join(lines)


def plot(points: Sequence[Point], bands: Bands, path: Path | io.BytesIO) -> Path | io.BytesIO:
    """Three panels, one x axis (the runs in order): flag rate per body part, score
    quantiles, drift figures with their bands; alerting runs marked. A PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(points))
    labels = [f"{p.when:%m-%d %H:%M}" for p in points]
    fig, axes = plt.subplots(3, 1, figsize=(10, 9.5), sharex=True)
    _panel_flag_rates(axes[0], x, points, bands)
    _panel_scores(axes[1], x, points)
    _panel_drift(axes[2], x, points, bands)
    for ax in axes:
        for i, p in enumerate(points):
            if p.alert:
                ax.axvspan(i - 0.4, i + 0.4, color="#b42318", alpha=0.12, lw=0)
        ax.grid(alpha=0.3)
    axes[-1].set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
    axes[0].set_title("Screening runs (red: the run alerted)")
    fig.tight_layout()
    if isinstance(path, Path):
        path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return path


def _series(points: Sequence[Point], name: str) -> np.ndarray:
    return np.array([p.metrics.get(name, np.nan) for p in points], dtype=float)


def _panel_flag_rates(ax: Any, x: np.ndarray, points: Sequence[Point], bands: Bands) -> None:
    parts = sorted({part for p in points for part in p.parts()})
    for part in parts:
        ax.plot(x, _series(points, f"{FLAG_RATE}.{part}"), marker=".", lw=1, label=part)
    ax.plot(x, _series(points, FLAG_RATE), color="black", lw=2.2, marker="o", label="all")
    reference = _series(points, FLAG_RATE) - _series(points, "drift.flag_rate_delta")
    if np.isfinite(reference).any():
        ax.fill_between(
            x,
            reference - bands.flag_rate,
            reference + bands.flag_rate,
            color="grey",
            alpha=0.15,
            label=f"reference ± {bands.flag_rate:g}",
        )
    ax.set_ylabel("flag rate")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, ncol=5, loc="upper left")


def _panel_scores(ax: Any, x: np.ndarray, points: Sequence[Point]) -> None:
    ax.fill_between(
        x,
        _series(points, "score.p05"),
        _series(points, "score.p95"),
        alpha=0.15,
        label="p05–p95",
    )
    ax.fill_between(
        x,
        _series(points, "score.p25"),
        _series(points, "score.p75"),
        alpha=0.3,
        label="p25–p75",
    )
    ax.plot(x, _series(points, "score.p50"), marker="o", label="median")
    ax.set_ylabel("study probability")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left")


def _panel_drift(ax: Any, x: np.ndarray, points: Sequence[Point], bands: Bands) -> None:
    for name, label in (
        ("drift.score_psi", "score PSI"),
        ("drift.intensity_psi", "intensity PSI"),
        ("drift.score_ks", "score KS"),
        ("drift.intensity_ks", "intensity KS"),
        ("drift.mix_cramers_v", "mix Cramér's V"),
    ):
        ax.plot(x, _series(points, name), marker="o", lw=1, label=label)
    for value, name, style in (
        (bands.psi, "PSI", "--"),
        (bands.ks, "KS", ":"),
        (bands.mix_v, "V", "-."),
    ):
        ax.axhline(value, ls=style, lw=1, color="grey", label=f"{name} band {value:g}")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylabel("drift against the reference")
    ax.set_title(
        f"a run alerts when a figure is out of its band and its test's p < {bands.alpha:g}",
        fontsize=8,
    )
    ax.legend(fontsize=7, ncol=4, loc="upper left")


def write_html(points: Sequence[Point], bands: Bands, path: Path) -> Path:
    """One page: the latest run's state, the trend plot, the table."""
    buffer = io.BytesIO()
    plot(points, bands, buffer)
    latest = points[-1]
    state = (
        f'<p class="alert">Latest run {html.escape(latest.run_id[:8])}: '
        f"{html.escape(latest.alert)}</p>"
        if latest.alert
        else f'<p class="ok">Latest run {html.escape(latest.run_id[:8])}: in band.</p>'
    )
    rows = table(points)
    head = "".join(f"<th>{html.escape(n)}</th>" for n, _ in _COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row.values()) + "</tr>"
        for row in rows
    )
    image = base64.b64encode(buffer.getvalue()).decode()
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>MURA screening '
        f"monitor</title><style>{_CSS}</style></head><body><h1>MURA screening monitor</h1>"
        f'{state}<img alt="trends" src="data:image/png;base64,{image}">'
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></body></html>\n"
    )
    return write_text_atomic(Path(path), page)  # one line, no temporary left, on a full disk


_CSS = (
    "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d232a}"
    "img{max-width:100%}table{border-collapse:collapse;margin-top:16px}"
    "td,th{padding:4px 8px;border-bottom:1px solid #d7dce1;text-align:left}"
    ".alert{background:#b42318;color:#fff;padding:10px 14px;border-radius:6px}"
    ".ok{background:#e6f4ea;padding:10px 14px;border-radius:6px}"
)
