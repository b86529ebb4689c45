"""Training runs as `mura compare` shows them: an aligned text table (accuracies image level,
AUROC and kappa study level, test) and a bar chart of one metric with its 95 % CIs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from pipelines.registry.runs import DEFAULT_METRIC, CompareError, RunRow


def _f(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


SHOWN = {
    "train.image.accuracy",
    "val.image.accuracy",
    "test.image.accuracy",
    "test.study.auroc",
    "test.study.kappa",
}


def table_rows(rows: Sequence[RunRow], metric: str = DEFAULT_METRIC) -> list[dict[str, str]]:
    """One dict per run, same keys for all: the columns of `format_table`."""
    parts = sorted({p for row in rows for p in row.kappa_by_part})
    extra = metric not in SHOWN and not metric.startswith("test.study.kappa.")
    out = []
    for row in rows:
        ci = "" if row.kappa_ci is None else f" ({row.kappa_ci[0]:.3f}, {row.kappa_ci[1]:.3f})"
        cells = {
            "run": row.run_id[:8],
            "name": row.run_name,
            "model": row.model or "?",
            "recipe": row.recipe or "?",
            "body part": row.body_part or "?",
            "train acc": _f(row.train_accuracy),
            "val acc": _f(row.val_accuracy),
            "test acc": _f(row.test_accuracy),
            "study AUROC": _f(row.study_auroc),
            "study kappa (95% CI)": _f(row.study_kappa) + ci,
        }
        for part in parts:
            cells[f"kappa {part.removeprefix('XR_')}"] = _f(row.kappa_by_part.get(part))
        if extra:
            cells[metric] = _f(row.value(metric))
        cells["registered"] = (
            ", ".join(str(r) for r in row.registered)
            if row.registered
            else ("logged, not registered" if row.logged_model else "no model")
        )
        out.append(cells)
    return out


def _numeric(text: str) -> bool:
    head = text.split(" ", 1)[0]
    try:
        float(head)
    except ValueError:
        return head == "n/a"
    return True


def format_table(rows: Sequence[RunRow], metric: str = DEFAULT_METRIC) -> str:
    """Aligned plain text, one line per run in the given order; numbers right-aligned.
    Accuracies are image level (the seed's Table 1); AUROC and kappa are study level, test."""
    cells = table_rows(rows, metric)
    if not cells:
        return ""
    head = list(cells[0])
    widths = {h: max(len(h), *(len(c[h]) for c in cells)) for h in head}
    numeric = {h: all(_numeric(c[h]) for c in cells) for h in head}

    def line(values: dict[str, str]) -> str:
        return "  ".join(
            values[h].rjust(widths[h]) if numeric[h] else values[h].ljust(widths[h]) for h in head
        ).rstrip()

    return "\n".join([line({h: h for h in head}), *(line(c) for c in cells)])


def plot(rows: Sequence[RunRow], metric: str, path: Path) -> Path:
    """Horizontal bars of `metric` per run, best on top, 95 % CI error bars where logged."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = [r for r in rows if r.value(metric) is not None]
    if not shown:
        raise CompareError(f"no run has metric {metric!r} to plot")
    labels = [f"{r.run_name or r.run_id[:8]}\n{r.model or '?'} · {r.run_id[:8]}" for r in shown]
    values = [r.value(metric) or 0.0 for r in shown]
    errors = [[0.0, 0.0] for _ in shown]
    has_ci = []
    for i, r in enumerate(shown):
        ci = r.ci(metric)
        if ci is not None:
            errors[i] = [max(values[i] - ci[0], 0.0), max(ci[1] - values[i], 0.0)]
        has_ci.append(ci is not None)
    fig = Figure(figsize=(8, 1.2 + 0.7 * len(shown)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    y = list(range(len(shown)))[::-1]  # best (first) on top
    ax.barh(y, values, color="#4c72b0", height=0.6)
    if any(has_ci):
        ax.errorbar(
            values,
            y,
            xerr=[[e[0] for e in errors], [e[1] for e in errors]],
            fmt="none",
            ecolor="black",
            capsize=4,
            lw=1.2,
        )
    cis = [r.ci(metric) for r in shown]
    low = min(0.0, *values, *(ci[0] for ci in cis if ci))
    high = max(1.0, *values, *(ci[1] for ci in cis if ci))
    for yi, v, ci in zip(y, values, cis, strict=True):
        text = f"{v:.3f}" + (f"  [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        if v >= 0.45 * (high - low):  # inside a long bar, else right of the bar and its CI
            ax.text(0.01 * (high - low), yi, text, va="center", color="white", fontsize=9)
        else:
            right = max(v, ci[1] if ci else v, 0.0) + 0.01 * (high - low)
            ax.text(right, yi, text, va="center", color="black", fontsize=9)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlim(low, high)
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.set_xlabel(metric + (" (bars: 95% CI)" if any(has_ci) else ""))
    missing = len(rows) - len(shown)
    ax.set_title(
        f"{metric} by run" + (f" ({missing} run(s) without it left out)" if missing else "")
    )
    ax.grid(axis="x", lw=0.4, alpha=0.6)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
