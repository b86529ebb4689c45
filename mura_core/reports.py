"""Plots and tables for a training run: learning curves, ROC, confusion matrices."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from mura_core.calibration import Reliability  # noqa: E402
from mura_core.metrics import BinaryMetrics  # noqa: E402
from mura_core.run_contract import EpochReport  # noqa: E402


def learning_curves(history: Sequence[EpochReport], path: Path) -> Path:
    """Train/val loss and accuracy per epoch (the seed paper's figures 8–11)."""
    epochs = [h.epoch for h in history]

    def series(key: str) -> list[float]:
        return [np.nan if getattr(h, key) is None else getattr(h, key) for h in history]

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, style in (("train_loss", "-"), ("val_loss", "--")):
        ax_loss.plot(epochs, series(key), style, label=key)
    for key, style in (("train_accuracy", "-"), ("val_accuracy", "--"), ("val_study_auroc", ":")):
        ax_acc.plot(epochs, series(key), style, label=key)
    ax_loss.set_xlabel("epoch")
    ax_acc.set_xlabel("epoch")
    ax_loss.set_title("loss")
    ax_acc.set_title("accuracy / study AUROC")
    ax_loss.legend()
    ax_acc.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def roc_plot(curves: dict[str, tuple[Sequence[int], Sequence[float]]], path: Path) -> Path:
    """ROC curves, one per named (labels, probabilities) pair; single-class ones skipped."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (y, p) in curves.items():
        if len(set(np.asarray(y).tolist())) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title("ROC")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def reliability_plot(curves: dict[str, Reliability], path: Path) -> Path:
    """Reliability diagram: observed rate of abnormal against mean probability per bin, one
    curve per named split, the diagonal for a calibrated model; ECE in the legend."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="calibrated")
    for name, curve in curves.items():
        ax.plot(curve.mean_prob, curve.observed, marker="o", label=f"{name} (ECE {curve.ece:.3f})")
    ax.set_xlabel("mean predicted probability (bin)")
    ax.set_ylabel("observed rate of abnormal")
    ax.set_title("Reliability (study level)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confusion_plot(metrics: BinaryMetrics, title: str, path: Path) -> Path:
    """Raw counts and row-normalized rates side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
    raw = np.array(metrics.confusion, dtype=float)
    norm = np.array(
        [[np.nan if v is None else v for v in row] for row in metrics.confusion_normalized],
        dtype=float,
    )
    for ax, data, fmt, sub in (
        (axes[0], raw, "{:.0f}", "counts"),
        (axes[1], norm, "{:.2f}", "normalized by truth"),
    ):
        ax.imshow(np.nan_to_num(data), cmap="Blues")
        for (i, j), value in np.ndenumerate(data):
            ax.text(j, i, "n/a" if np.isnan(value) else fmt.format(value), ha="center", va="center")
        ax.set_xticks([0, 1], ["normal", "abnormal"])
        ax.set_yticks([0, 1], ["normal", "abnormal"])
        ax.set_xlabel("predicted")
        ax.set_ylabel("truth")
        ax.set_title(f"{title}: {sub}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
