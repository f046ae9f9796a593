"""The tutorial's two training plots, from a history of per-epoch records."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402


def plot_metric(history: Sequence[dict[str, float]], metric: str, title: str) -> Figure:
    """Training vs validation `metric` per epoch, titled and labelled, as the tutorial plots them."""
    epochs = [record["epoch"] for record in history]
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    axes.plot(epochs, [record[metric] for record in history], "o-", label=f"Training {metric}")
    axes.plot(epochs, [record[f"val_{metric}"] for record in history], "s-", label=f"Validation {metric}")
    axes.set_title(title)
    axes.set_xlabel("Epoch")
    axes.set_ylabel(metric.capitalize())
    axes.grid(alpha=0.3)
    axes.legend()
    return figure


def plot_confusion(matrix: Sequence[Sequence[float]], class_names: Sequence[str], title: str) -> Figure:
    """A confusion matrix as a heat map, each cell labelled with its value (rows: true, columns: predicted)."""
    size = max(4.0, 0.6 * len(class_names) + 2)
    figure = Figure(figsize=(size, size))
    axes = figure.subplots()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046)
    ticks = range(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, class_names)
    axes.set_xlabel("Predicted")
    axes.set_ylabel("True")
    axes.set_title(title)
    peak = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            text = f"{value:.2f}" if isinstance(value, float) else str(value)
            axes.text(j, i, text, ha="center", va="center", color="white" if value > peak / 2 else "black")
    return figure


def plot_roc(false_positive_rate: Sequence[float], true_positive_rate: Sequence[float], auc: float) -> Figure:
    """The ROC curve of a two-class model, with the chance diagonal."""
    figure = Figure(figsize=(5, 5))
    axes = figure.subplots()
    axes.plot(false_positive_rate, true_positive_rate, "-", label=f"ROC (AUC {auc:.3f})")
    axes.plot([0, 1], [0, 1], "--", color="grey", label="Chance")
    axes.set_xlabel("False positive rate")
    axes.set_ylabel("True positive rate")
    axes.set_title("ROC curve")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    return figure


def plot_reliability(bins: Sequence[dict], ece: float) -> Figure:
    """Accuracy against confidence per bin (a reliability diagram); the diagonal is perfect calibration."""
    figure = Figure(figsize=(5, 5))
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], "--", color="grey", label="Perfectly calibrated")
    axes.bar(
        [(b["low"] + b["high"]) / 2 for b in bins],
        [b["accuracy"] for b in bins],
        width=[b["high"] - b["low"] for b in bins],
        edgecolor="black",
        alpha=0.7,
        label="Accuracy in bin",
    )
    axes.plot(
        [b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="black", label="Mean confidence"
    )
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("Confidence (top probability)")
    axes.set_ylabel("Accuracy")
    axes.set_title(f"Reliability (ECE {ece:.3f})")
    axes.legend(loc="upper left")
    return figure
