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
