"""`report.html`: one self-contained page about a run and an evaluation, readable offline.

Every image (plots, thumbnails, Grad-CAM overlays) is embedded as a data URI and nothing links outside the
file. Each confusion-matrix cell opens the thumbnails and names of its images (CSS `:target`, no script).
A multi-label run's report shows its thresholds, scores per label, per label the images it got wrong, and
Grad-CAM of each label it predicts for a sample.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from PIL import Image

from imgclf.config import ImgclfError
from imgclf.data.images import file_thumbnail_uri, thumbnail_uri
from imgclf.deploy.predictor import Run
from imgclf.evaluation import metrics
from imgclf.evaluation.evaluate import Evaluation
from imgclf.evaluation.explain import explain_labels
from imgclf.evaluation.multi_label import MultiLabelEvaluation
from imgclf.evaluation.plots import plot_confusion, plot_metric, plot_reliability, plot_roc
from imgclf.files import atomic_write_text

REPORT_FILE = "report.html"
THUMBNAIL_SIZE = 128
MOST_CONFIDENTLY_WRONG = 8
MAX_THUMBNAILS = 200
EXPLAINED_IMAGES = 8

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: 0.5rem 0; } td, th { border: 1px solid #ccc; padding: 0.3rem 0.6rem; }
th { background: #f3f3f3; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
td.diagonal { background: #e7f4e7; } td.off { background: #fbeaea; }
.figures img { max-width: 48%; margin-right: 1%; }
.gallery { display: flex; flex-wrap: wrap; gap: 0.6rem; }
figure.thumb { margin: 0; width: 140px; font-size: 0.75rem; word-break: break-all; }
figure.thumb img { width: 128px; height: 128px; object-fit: contain; background: #f6f6f6; display: block; }
section.cell { display: none; border: 1px solid #ccc; padding: 0.5rem 1rem; margin: 0.5rem 0; }
section.cell:target { display: block; }
.muted { color: #777; }
"""


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _figure_uri(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return _data_uri(buffer.getvalue(), "image/png")


class _Thumbnails:
    """Thumbnails of image files, each made once however many sections show it."""

    def __init__(self):
        self.uris: dict[str, str | None] = {}

    def __call__(self, path: str) -> str | None:
        if path not in self.uris:
            self.uris[path] = file_thumbnail_uri(path, THUMBNAIL_SIZE)
        return self.uris[path]


def _e(value: object) -> str:
    return html.escape(str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(value) for value in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f'<td class="number">{value:.4f}</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="number">{value}</td>'
    return f"<td>{_e(value)}</td>"


def _thumb(uri: str | None, caption: str) -> str:
    picture = f'<img src="{uri}" alt="">' if uri else '<div class="muted">(unreadable)</div>'
    return f'<figure class="thumb">{picture}<figcaption>{_e(caption)}</figcaption></figure>'


def _configuration(run: Run) -> str:
    train = run.config.train.to_dict()
    train["augment"] = {k: v for k, v in train["augment"].items() if v not in (0, 0.0, False)} or "none"
    rows = [(key, json.dumps(value) if isinstance(value, dict) else value) for key, value in train.items()]
    rows += [("preprocessing", json.dumps(asdict(run.preprocessing))), ("temperature", run.temperature)]
    return "<h2>Configuration</h2>" + _table(("option", "value"), [(k, str(v)) for k, v in rows])


def _dataset(run: Run, evaluation: Evaluation) -> str:
    dataset = run.config.dataset
    rows = []
    for split in ("train", "val"):
        counts = dataset.get(f"{split}_class_counts")
        if counts:
            rows.append((f"{split} ({dataset.get(f'{split}_root', '')})", *counts, sum(counts)))
    if evaluation.labelled:
        counts = [evaluation.true_labels.count(i) for i in range(len(evaluation.class_names))]
        rows.append((f"evaluated ({evaluation.folder})", *counts, sum(counts)))
    unreadable = len(evaluation.predictions) - len(evaluation.scored)
    note = f"<p>{unreadable} evaluated images could not be read.</p>" if unreadable else ""
    return "<h2>Dataset</h2>" + _table(("split", *evaluation.class_names, "total"), rows) + note


def _curves(run: Run) -> str:
    history = run.history
    if not history:
        return ""
    loss = _figure_uri(plot_metric(history, "loss", "Training and validation loss"))
    accuracy = _figure_uri(plot_metric(history, "accuracy", "Training and validation accuracy"))
    images = f'<img src="{loss}" alt="loss"><img src="{accuracy}" alt="accuracy">'
    return f'<h2>Training curves</h2><div class="figures">{images}</div>'


def _metrics(values: dict) -> str:
    headline = [
        ("accuracy", values["accuracy"]),
        ("macro F1", values["macro_f1"]),
        ("log-loss", values["log_loss"]),
        ("expected calibration error", values["calibration"]["ece"]),
    ]
    if values["roc"] is not None:
        headline.append(("ROC AUC", values["roc"]["auc"]))
    top_k = next((key for key in values if key.startswith("top_") and values[key] is not None), None)
    if top_k:
        headline.append((top_k.replace("_", " "), values[top_k]))
    per_class = [(r["class"], r["precision"], r["recall"], r["f1"], r["support"]) for r in values["per_class"]]
    coverage = [(f"≥ {r['threshold']}", r["coverage"], r["accuracy"]) for r in values["coverage"]]
    return (
        "<h2>Metrics</h2>"
        + _table(("metric", "value"), headline)
        + _table(("class", "precision", "recall", "F1", "support"), per_class)
        + "<h3>Coverage and accuracy by confidence</h3><p>Images whose top probability is below a threshold "
        "would be labelled <em>unsure</em> by <code>--min-confidence</code>.</p>"
        + _table(("top probability", "coverage", "accuracy"), coverage)
    )


def _confusion(evaluation: Evaluation, thumbnails: _Thumbnails) -> str:
    names = evaluation.class_names
    matrix = evaluation.confusion
    share = metrics.normalize_rows(matrix)
    true, predicted, _ = evaluation.arrays()
    files = [evaluation.predictions[i].file for i in evaluation.scored]
    rows, panels = [], []
    for i, name in enumerate(names):
        cells = []
        for j in range(len(names)):
            anchor = f"cell-{i}-{j}"
            kind = "diagonal" if i == j else "off"
            cells.append(
                f'<td class="number {kind}"><a href="#{anchor}">{matrix[i, j]}</a> '
                f'<span class="muted">({share[i, j]:.0%})</span></td>'
            )
            members = [files[k] for k in range(len(files)) if true[k] == i and predicted[k] == j]
            shown = "".join(_thumb(thumbnails(f), Path(f).name) for f in members[:MAX_THUMBNAILS])
            more = (
                f"<p class='muted'>and {len(members) - MAX_THUMBNAILS} more</p>"
                if len(members) > MAX_THUMBNAILS
                else ""
            )
            panels.append(
                f'<section class="cell" id="{anchor}"><h3>True {_e(name)}, predicted {_e(names[j])}: '
                f'{len(members)} images</h3><div class="gallery">{shown}</div>{more}</section>'
            )
        rows.append(f"<tr><th>{_e(name)}</th>{''.join(cells)}</tr>")
    header = "".join(f"<th>{_e(n)}</th>" for n in names)
    heat = _figure_uri(plot_confusion(share.round(2).tolist(), names, "Confusion matrix (share of each true class)"))
    return (
        "<h2>Confusion matrix</h2><p>Rows: true class; columns: predicted. Click a count to see its images.</p>"
        f"<table><tr><th>true \\ predicted</th>{header}</tr>{''.join(rows)}</table>{''.join(panels)}"
        f'<div class="figures"><img src="{heat}" alt="confusion matrix"></div>'
    )


def _curves_of_scores(values: dict) -> str:
    figures = []
    if values["roc"] is not None:
        roc = values["roc"]
        figures.append(_figure_uri(plot_roc(roc["false_positive_rate"], roc["true_positive_rate"], roc["auc"])))
    figures.append(_figure_uri(plot_reliability(values["calibration"]["bins"], values["calibration"]["ece"])))
    images = "".join(f'<img src="{uri}" alt="">' for uri in figures)
    title = "ROC and calibration" if values["roc"] is not None else "Calibration"
    return f'<h2>{title}</h2><div class="figures">{images}</div>'


def _misclassified(values: dict, thumbnails: _Thumbnails) -> str:
    wrong = values["misclassified"]
    if not wrong:
        return "<h2>Misclassified images</h2><p>None: every image was classified correctly.</p>"

    def gallery(rows: Sequence[dict]) -> str:
        return (
            '<div class="gallery">'
            + "".join(
                _thumb(
                    thumbnails(r["file"]),
                    f"{Path(r['file']).name}: {r['true_label']} → {r['predicted_label']} ({r['probability']:.2f})",
                )
                for r in rows
            )
            + "</div>"
        )

    confident = f"<h2>Most confidently wrong</h2>{gallery(wrong[:MOST_CONFIDENTLY_WRONG])}"
    if len(wrong) <= MOST_CONFIDENTLY_WRONG:
        return confident
    return confident + f"<h2>All misclassified images ({len(wrong)})</h2>{gallery(wrong[:MAX_THUMBNAILS])}"


def _explanations(explanations: Sequence[tuple[str, Image.Image]]) -> str:
    if not explanations:
        return ""
    shown = "".join(_thumb(thumbnail_uri(image, 224), caption) for caption, image in explanations)
    return (
        "<h2>Grad-CAM</h2><p>Where the model looked: warm colours mark the regions that raised the score of the "
        f'class named under each image.</p><div class="gallery">{shown}</div>'
    )


def _predictions_only(evaluation: Evaluation, thumbnails: _Thumbnails) -> str:
    rows = [p for p in evaluation.predictions if p.error is None][:MAX_THUMBNAILS]
    shown = "".join(_thumb(thumbnails(p.file), f"{Path(p.file).name}: {p.label} ({p.probability:.2f})") for p in rows)
    return f'<h2>Predictions (unlabelled folder)</h2><div class="gallery">{shown}</div>'


def explain_sample(
    run: Run, evaluation: Evaluation | MultiLabelEvaluation, count: int = EXPLAINED_IMAGES
) -> list[tuple[str, Image.Image]]:
    """Grad-CAM overlays, with their captions, for up to `count` evaluated images: the most confidently wrong (a
    multi-label run: those with a label given wrongly or missed) first, then others spread over the rest. Each
    image gets one overlay per label it is given (`explain_labels`).

    Models Grad-CAM cannot explain (no spatial feature map) get none.
    """
    if isinstance(evaluation, MultiLabelEvaluation):
        read = [p for p in evaluation.predictions if p.error is None]
        wrong = evaluation.mistaken()
    else:
        read = [evaluation.predictions[i] for i in evaluation.scored]
        wrong = [row["file"] for row in evaluation.misclassified()]
    wrong = wrong[: count // 2]
    rest = [p.file for p in read if p.file not in wrong]
    step = max(1, len(rest) // max(1, count - len(wrong)))
    explanations = []
    for file in wrong + rest[::step][: count - len(wrong)]:
        try:
            shown = explain_labels(run, file, max_side=THUMBNAIL_SIZE * 2)
        except ImgclfError:
            return []
        explanations += [(f"{Path(file).name}: {e.label} ({e.probability:.2f})", e.overlay) for e in shown]
    return explanations


def build_report(run: Run, evaluation: Evaluation, explain: bool = True) -> str:
    """The HTML text of the report for `run` and `evaluation`, with Grad-CAM for a sample if `explain`."""
    values = evaluation.to_dict()
    explanations = explain_sample(run, evaluation) if explain else []
    thumbnails = _Thumbnails()
    title = f"imgclf report: {run.run_dir.name}"
    intro = (
        f"<p>Model <code>{_e(run.config.train.model)}</code>, classes {_e(', '.join(run.class_names))}; "
        f"evaluated on <code>{_e(evaluation.folder)}</code> ({values['scored']} images"
        f"{', flip test-time augmentation' if evaluation.tta else ''}).</p>"
    )
    if evaluation.labelled and values["scored"]:
        body = (
            _metrics(values)
            + _confusion(evaluation, thumbnails)
            + _curves_of_scores(values)
            + _misclassified(values, thumbnails)
        )
    else:
        body = _predictions_only(evaluation, thumbnails)
    sections = _configuration(run) + _dataset(run, evaluation) + _curves(run) + body + _explanations(explanations)
    return _page(title, intro, sections)


def _page(title: str, intro: str, sections: str) -> str:
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{_e(title)}</h1>{intro}{sections}</body></html>\n"
    )


def write_report(
    run: Run, evaluation: Evaluation | MultiLabelEvaluation, path: str | Path, explain: bool = True
) -> Path:
    """Write `build_report(...)` (`build_multi_label_report(...)` for a multi-label evaluation) to `path`,
    atomically."""
    path = Path(path)
    if isinstance(evaluation, MultiLabelEvaluation):
        atomic_write_text(path, build_multi_label_report(run, evaluation, explain))
    else:
        atomic_write_text(path, build_report(run, evaluation, explain))
    return path


def build_multi_label_report(run: Run, evaluation: MultiLabelEvaluation, explain: bool = True) -> str:
    """The HTML text of the report for a multi-label `run` and `evaluation`, with Grad-CAM for a sample if
    `explain`."""
    values = evaluation.to_dict()
    explanations = explain_sample(run, evaluation) if explain else []
    title = f"imgclf report: {run.run_dir.name}"
    intro = (
        f"<p>Multi-label model <code>{_e(run.config.train.model)}</code>, labels {_e(', '.join(run.class_names))}; "
        f"evaluated on <code>{_e(evaluation.source)}</code> ({values['images']} images).</p>"
    )
    dataset = run.config.dataset
    counts = [
        (f"{split} ({dataset.get(f'{split}_root', '')})", *dataset[f"{split}_class_counts"])
        for split in ("train", "val")
        if dataset.get(f"{split}_class_counts")
    ]
    counts.append((f"evaluated ({evaluation.source})", *map(int, evaluation.truth.sum(axis=0))))
    sections = (
        _configuration(run)
        + "<h2>Dataset</h2><p>Images per label (an image counts in each of its labels).</p>"
        + _table(("split", *evaluation.class_names), counts)
        + _curves(run)
        + (_multi_label_metrics(values) + _label_mistakes(evaluation, _Thumbnails()) if values["images"] else "")
        + _explanations(explanations)
    )
    return _page(title, intro, sections)


def _multi_label_metrics(values: dict) -> str:
    names = {"mean_average_precision": "mean average precision", "subset_accuracy": "subset accuracy"}
    names |= {"hamming_loss": "Hamming loss", "micro_f1": "micro F1", "macro_f1": "macro F1"}
    headline = [(name, values[key]) for key, name in names.items()]
    columns = ("threshold", "precision", "recall", "f1", "average_precision", "support")
    per_label = [(r["class"], *("–" if r[c] is None else r[c] for c in columns)) for r in values["per_class"]]
    return (
        "<h2>Metrics</h2>"
        + _table(("metric", "value"), headline)
        + "<p>A label is predicted when its probability reaches its threshold, tuned for F1 on the validation "
        "images.</p>"
        + _table(("label", "threshold", "precision", "recall", "F1", "average precision", "support"), per_label)
    )


def _label_mistakes(evaluation: MultiLabelEvaluation, thumbnails: _Thumbnails) -> str:
    """Per label, the images it was given wrongly (most probable first) and those it missed (least first)."""
    parts = []
    read = [(i, p) for i, p in enumerate(evaluation.predictions) if p.error is None]
    for column, name in enumerate(evaluation.class_names):
        given = sorted(
            ((p.probabilities[name], p) for i, p in read if name in p.labels and not evaluation.truth[i, column]),
            key=lambda pair: -pair[0],
        )
        missed = sorted(
            ((p.probabilities[name], p) for i, p in read if name not in p.labels and evaluation.truth[i, column]),
            key=lambda pair: pair[0],
        )
        for what, rows in (("given wrongly", given), ("missed", missed)):
            if rows:
                shown = "".join(
                    _thumb(thumbnails(p.file), f"{Path(p.file).name}: {probability:.2f}")
                    for probability, p in rows[:MOST_CONFIDENTLY_WRONG]
                )
                parts.append(f'<h3>{_e(name)} {what} ({len(rows)})</h3><div class="gallery">{shown}</div>')
    body = "".join(parts) or "<p>None: every label of every image was right.</p>"
    return "<h2>Mistakes per label</h2>" + body
