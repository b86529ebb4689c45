"""The ablation's results table (bench/results/ablation/README.md), written from the JSON
record each `bench/ablation.py` run leaves (`bench/ablation.py --table` rewrites it)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def _auc(result: dict[str, Any]) -> str:
    low, high = result["test_ci95"]
    return f"{result['test_auroc']:.3f} [{low:.3f}, {high:.3f}]"


def write_table(
    folder: Path, ablations: Mapping[str, tuple[str, str, str]], configs: Iterable[str]
) -> Path:
    """bench/results/ablation/README.md from the JSON files in `folder`: the baseline, each
    of `ablations` (name: ingredient, on, off) that ran, the other runs, and which of
    `configs` have not run yet."""
    runs = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
    base = runs.get("baseline")
    counts = (base or next(iter(runs.values()), {})).get("counts", {})
    test = f"{counts.get('test_images')} images, {counts.get('test_fractured')} fractured"
    lines = [
        "# From-scratch ablation on FracAtlas (bench/ablation.py)",
        "",
        "Test AUROC (image level, 95 % bootstrap CI) of the headline variant (EMA weights, "
        "flip TTA) at the best val-AUROC epoch; every run the same budget as the baseline "
        "unless its row says otherwise; val AUROC: the same variant at its chosen epoch. "
        f"The CIs are of each run alone (test: {test}); differences "
        "smaller than ~0.04 are within them, and one seed per row. Seconds: the whole run "
        "on a 2-core machine shared with other work, niced (the first runs: 1 torch thread, "
        "two side by side, load 8-25; architecture and resolution: 2 threads, one at a time "
        "beside test suites, load 3-50): noisy, several times the idle machine's, and no "
        "measure of one configuration's cost against another's.",
        "",
        "| ingredient | on (baseline) | off (this run) | test AUROC [95 % CI] | Δ vs baseline "
        "| val AUROC | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    if base is not None:
        cfg = base["config"]
        lines.append(
            f"| **baseline** | {cfg['model']} 1-ch {cfg['size']} px, {cfg['epochs']} ep | | "
            f"{_auc(base)} | | {base['val_auroc']:.3f} | {base['seconds']:.0f} |"
        )
        for variant, label, off in (
            ("raw+tta", "weight EMA", "raw weights (same run)"),
            ("ema", "flip TTA", "no TTA (same run)"),
            ("raw", "EMA and TTA", "neither (same run)"),
        ):
            result = base["variants"][variant]
            delta = result["test_auroc"] - base["test_auroc"]
            lines.append(
                f"| {label} | on | {off} | {_auc(result)} | {delta:+.3f} | "
                f"{result['val_auroc_this']:.3f} | (free) |"
            )
    for name, (ingredient, on, off) in ablations.items():
        run = runs.get(name)
        if run is None:
            continue
        delta = "" if base is None else f"{run['test_auroc'] - base['test_auroc']:+.3f}"
        lines.append(
            f"| {ingredient} | {on} | {off} | {_auc(run)} | {delta} | "
            f"{run['val_auroc']:.3f} | {run['seconds']:.0f} |"
        )
    others = [n for n in runs if n != "baseline" and n not in ablations]
    for name in others:
        run = runs[name]
        lines.append(
            f"| {name} | | | {_auc(run)} | | {run['val_auroc']:.3f} | {run['seconds']:.0f} |"
        )
    lines += [
        "",
        "EMA and TTA on every run (test AUROC of the four evaluations of the same weights):",
        "",
        "| run | raw | raw + TTA | EMA | EMA + TTA | best epoch raw / EMA | s/epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, run in runs.items():
        v = run["variants"]
        lines.append(
            f"| {name} | {v['raw']['test_auroc']:.3f} | {v['raw+tta']['test_auroc']:.3f} | "
            f"{v['ema']['test_auroc']:.3f} | {v['ema+tta']['test_auroc']:.3f} | "
            f"{v['raw']['best_epoch']} / {v['ema']['best_epoch']} | "
            f"{run['seconds_per_epoch']:.0f} |"
        )
    missing = [n for n in configs if n not in runs]
    if missing:
        lines += ["", f"Not run yet (same budget, `bench/ablation.py NAME`): {', '.join(missing)}."]
    lines += [
        "",
        "Data: FracAtlas, Abedeen I., Rahman M.A., Prottyasha F.Z., Ahmed T., Chowdhury T.M., "
        'Shatabda S., "FracAtlas: A Dataset for Fracture Classification, Localization and '
        'Segmentation of Musculoskeletal Radiographs", Scientific Data 10, 521 (2023), '
        "doi:10.1038/s41597-023-02432-4; CC BY 4.0. Downscaled to ≤ 512 px; the 59 truncated "
        "JPEGs of the release skipped.",
    ]
    out = folder / "README.md"
    out.write_text("\n".join(lines) + "\n")
    return out
