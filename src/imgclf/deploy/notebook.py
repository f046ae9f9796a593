"""How a run shows itself: one line in a terminal (`repr`), and a small card in Jupyter (`_repr_html_`).

Both read only what the run directory holds (config, history, metrics.json, the curves); names are escaped.
"""

from __future__ import annotations

import base64
import html
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imgclf.deploy.predictor import Run  # the predictor calls these

CURVES = ("loss.png", "accuracy.png")
HEADLINE = (("accuracy", "accuracy"), ("macro_f1", "macro F1"), ("log_loss", "log loss"))


def val_accuracy(run: Run) -> float | None:
    """The kept weights' accuracy on the validation images (metrics.json), else the best epoch's from history."""
    accuracy = run.metrics.get("accuracy")
    if accuracy is None and run.history:
        accuracy = min(run.history, key=lambda record: record["val_loss"])["val_accuracy"]
    return accuracy


def run_summary(run: Run) -> str:
    """`Run(model=..., classes=[...], run_dir=..., val_accuracy=...)`."""
    accuracy = val_accuracy(run)
    shown = "None" if accuracy is None else f"{accuracy:.4f}"
    return (
        f"Run(model={run.config.train.model!r}, classes={run.class_names!r}, run_dir={str(run.run_dir)!r}, "
        f"val_accuracy={shown})"
    )


def run_html(run: Run) -> str:
    """An HTML card: the model and data, the headline metrics, the training curves and the confusion matrix."""
    e = html.escape
    train = run.config.train
    accuracy = val_accuracy(run)
    title = (
        f"<b>{e(train.model)}</b> on {e(str(train.data))} · {len(run.class_names)} classes · "
        f"{len(run.history)} epochs · <code>{e(str(run.run_dir))}</code>"
    )
    parts = [f"<div>{title}</div>", _headline(run.metrics, accuracy), _curves(run), _confusion(run)]
    return '<div class="imgclf-run">' + "".join(part for part in parts if part) + "</div>"


def _headline(values: dict, accuracy: float | None) -> str:
    cells = [(label, values.get(key)) for key, label in HEADLINE]
    if values.get("accuracy") is None:
        cells[0] = ("val accuracy", accuracy)
    shown = [f"<td>{html.escape(label)}</td><td>{value:.4f}</td>" for label, value in cells if value is not None]
    return f"<table><tr>{'</tr><tr>'.join(shown)}</tr></table>" if shown else ""


def _curves(run: Run) -> str:
    images = []
    for name in CURVES:
        path = run.run_dir / name
        if path.is_file():
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            images.append(f'<img alt="{name}" style="max-width:45%" src="data:image/png;base64,{data}">')
    return f"<div>{''.join(images)}</div>" if images else ""


def _confusion(run: Run) -> str:
    matrix = run.metrics.get("confusion_matrix")
    if not matrix:
        return ""
    names = [html.escape(name) for name in run.class_names]
    header = "<tr><th>true \\ predicted</th>" + "".join(f"<th>{name}</th>" for name in names) + "</tr>"
    rows = "".join(
        f"<tr><th>{name}</th>" + "".join(f"<td>{count}</td>" for count in row) + "</tr>"
        for name, row in zip(names, matrix)
    )
    return f"<table>{header}{rows}</table>"
