"""What the command line shows: log lines and the tables each command prints (the progress bars are the
library's, in `training/progress.py`)."""

from __future__ import annotations

import dataclasses
import io
import logging
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from imgclf.caches import format_size
from imgclf.deploy.batch import csv_header, csv_row
from imgclf.files import csv_rows_text, csv_text, json_text
from imgclf.training import progress as library_progress
from imgclf.training.progress import stderr

if TYPE_CHECKING:  # the types only: the modules that define them import PyTorch
    from imgclf.caches import CacheSize
    from imgclf.deploy.predictor import Prediction
    from imgclf.deploy.sorting import Sorted
    from imgclf.evaluation.runs_index import ComparedValue, RunsListing, RunSummary

stdout = Console(soft_wrap=True)

RUN_FILES = (
    "model.safetensors",
    "config.json",
    "history.csv",
    "loss.png",
    "accuracy.png",
    "summary.txt",
    "calibration.json",
    "metrics.json",
    "predictions.csv",
    "report.html",
    "skipped.csv",
)


class ConsoleLogHandler(logging.Handler):
    """Library log records as plain lines on the terminal, above any progress bar; warnings yellow, errors red."""

    def emit(self, record: logging.LogRecord) -> None:
        prefix, style = "", None
        if record.levelno >= logging.ERROR:
            prefix, style = "error: ", "red"
        elif record.levelno >= logging.WARNING:
            prefix, style = "warning: ", "yellow"
        stderr.print(prefix + self.format(record), style=style, markup=False, highlight=False)


def progress_bar(label: str, rate: bool = False) -> Progress:
    """The commands' progress bar: the library's on stderr, with images a second and the time left if `rate`,
    and none where stderr is no terminal (a script's log)."""
    return library_progress.progress_bar(label, rate=rate, terminal_only=True)


@contextmanager
def progress_callback(label: str) -> Iterator[Callable[[int, int], None]]:
    """A `progress_bar` with rate for the library's `progress(done, total)` callbacks, as a context.

    The first call sets where the bar starts (a resumed run's rows already done), without counting them in the
    rate.
    """
    with progress_bar(label, rate=True) as progress:
        task = progress.add_task(label, total=None)

        def advance(done: int, total: int) -> None:
            if progress.tasks[0].total is None:
                progress.reset(task, total=total, completed=done)
            else:
                progress.update(task, completed=done)

        yield advance


def print_run_files(run_dir: Path) -> None:
    """The run directory and the files of it a user opens."""
    stdout.print(f"Run directory: {run_dir}")
    for name in RUN_FILES:
        if (run_dir / name).exists():
            stdout.print(f"  {run_dir / name}")


def predictions_table(predictions: Sequence[Prediction], title: str | None = None, root: Path | None = None) -> Table:
    """File, label, class index and probability; files under `root` are shown relative to it."""
    table = Table(title=title)
    for column in ("file", "label", "index", "probability"):
        table.add_column(column, justify="right" if column in ("index", "probability") else "left", overflow="fold")
    for p in predictions:
        shown = p.file
        if root is not None and Path(p.file).is_relative_to(root):
            shown = str(Path(p.file).relative_to(root))
        if p.error is not None:
            table.add_row(escape(shown), f"[red]unreadable: {escape(p.error)}[/red]", "", "")
        else:
            index = "" if p.index is None else str(p.index)
            table.add_row(escape(shown), escape(p.label), index, f"{p.probability:.4f}")
    return table


def table_text(table: Table) -> str:
    """A table as plain text, for writing to a file."""
    console = Console(file=io.StringIO(), width=200)
    console.print(table)
    return console.file.getvalue()


class PredictionStream:
    """Predictions handed to `write` as they come: CSV rows (`csv_header` first) or one JSON array (`fmt`).

    Call it with each batch, then `close()` (which ends the JSON array). The JSON is the text
    `json.dumps([...], indent=2)` writes, one prediction at a time.
    """

    def __init__(self, write: Callable[[str], object], fmt: str, class_names: Sequence[str]):
        self.write, self.fmt, self.class_names = write, fmt, class_names
        self.started = False

    def __call__(self, predictions: Sequence[Prediction]) -> None:
        if self.fmt == "json":
            items = [textwrap.indent(json_text(dataclasses.asdict(p)).rstrip("\n"), "  ") for p in predictions]
            if items:
                self.write(("," if self.started else "[") + "\n" + ",\n".join(items))
                self.started = True
            return
        rows = [csv_row(p, self.class_names) for p in predictions]
        if not self.started:
            rows.insert(0, csv_header(self.class_names))
            self.started = True
        self.write(csv_rows_text(rows))

    def close(self) -> None:
        if self.fmt == "json":
            self.write("\n]\n" if self.started else "[]\n")


def warn_unreadable(failed: int, total: int, where: str) -> None:
    """One yellow line when some (not all) images could not be read; nothing otherwise."""
    if 0 < failed < total:
        stderr.print(f"[yellow]{failed} of {total} images could not be read (see {escape(where)}).")


def sorted_table(result: Sorted, out_dir: Path) -> Table:
    """Images sorted into each folder of `out_dir` by this call (unreadable ones apart), then their total."""
    table = Table(title=f"Sorted into {escape(str(out_dir))}")
    table.add_column("folder")
    table.add_column("images", justify="right")
    for folder, count in sorted(result.per_folder.items()):
        table.add_row(escape(folder), f"{count:,}")
    if result.tally.unreadable:
        table.add_row("[red]unreadable (not copied)[/red]", f"{result.tally.unreadable:,}")
    table.add_row("total", f"{result.tally.images:,}", style="bold")
    return table


def print_multi_label_evaluation(values: dict) -> None:
    """The headline numbers and per-label table of a multi-label evaluation's `metrics.json` values."""
    stdout.print(
        f"mAP: {values['mean_average_precision']:.4f}  subset accuracy: {values['subset_accuracy']:.4f}  "
        f"Hamming loss: {values['hamming_loss']:.4f}  micro F1: {values['micro_f1']:.4f}  "
        f"({values['images']} images scored, {values['unreadable']} unreadable)"
    )
    per_class = Table(title="Per label")
    for column in ("label", "threshold", "precision", "recall", "F1", "AP", "support"):
        per_class.add_column(column, justify="left" if column == "label" else "right")
    for row in values["per_class"]:
        numbers = [row[key] for key in ("threshold", "precision", "recall", "f1", "average_precision")]
        per_class.add_row(
            escape(row["class"]), *("–" if n is None else f"{n:.4f}" for n in numbers), str(row["support"])
        )
    stdout.print(per_class)


def print_evaluation(evaluation) -> None:
    """The headline numbers, per-class table and confusion matrix of an evaluation (predictions if unlabelled)."""
    values = evaluation.to_dict()
    unreadable = values["images"] - values["scored"]
    if not values["labelled"]:
        stdout.print(predictions_table(evaluation.predictions, "Predictions (the folder has no class sub-folders)"))
        return
    headline = (
        f"Accuracy: {values['accuracy']:.4f}  macro F1: {values['macro_f1']:.4f}  log-loss: {values['log_loss']:.4f}"
        f"  ECE: {values['calibration']['ece']:.4f}"
    )
    if values["roc"] is not None:
        headline += f"  AUC: {values['roc']['auc']:.4f}"
    if values.get("top_5_accuracy") is not None:
        headline += f"  top-5: {values['top_5_accuracy']:.4f}"
    stdout.print(f"{headline}  ({values['scored']} images scored, {unreadable} unreadable)")
    per_class = Table(title="Per class")
    for column in ("class", "precision", "recall", "F1", "support"):
        per_class.add_column(column, justify="left" if column == "class" else "right")
    for row in values["per_class"]:
        per_class.add_row(
            escape(row["class"]),
            f"{row['precision']:.4f}",
            f"{row['recall']:.4f}",
            f"{row['f1']:.4f}",
            str(row["support"]),
        )
    stdout.print(per_class)
    confusion = Table(title="Confusion matrix (rows: true, columns: predicted)")
    confusion.add_column("")
    for name in evaluation.class_names:
        confusion.add_column(escape(name), justify="right")
    for name, row in zip(evaluation.class_names, evaluation.confusion):
        confusion.add_row(escape(name), *[str(v) for v in row])
    stdout.print(confusion)
    if values["min_confidence"] is not None:
        stdout.print(f"{values['unsure']} images below --min-confidence {values['min_confidence']} (unsure).")
    if values["misclassified"]:
        worst = values["misclassified"][0]
        stdout.print(
            f"{len(values['misclassified'])} misclassified; most confidently wrong: {escape(worst['file'])} "
            f"({worst['true_label']} taken for {worst['predicted_label']} at {worst['probability']:.3f})"
        )


def experiments_table(results) -> Table:
    """The experiments side by side: final and best val accuracy, seconds, and the share of unseen photos right."""
    table = Table(title="The tutorial's experiments")
    for column in ("experiment", "model", "final val_accuracy", "best val_accuracy", "seconds"):
        table.add_column(column, justify="left" if column in ("experiment", "model") else "right")
    for result in results:
        history = result.run.history
        best = max(record["val_accuracy"] for record in history)
        table.add_row(
            result.experiment,
            result.run.config.train.model,
            f"{history[-1]['val_accuracy']:.4f}",
            f"{best:.4f}",
            f"{result.seconds:.1f}",
        )
    return table


def explanations_table(results, out_dir: Path) -> Table:
    """One row per overlay: predicted and explained class, probability and the overlay's file name; a multi-label
    run's rows (one per label) also give the label's threshold."""
    thresholds = any(result.threshold is not None for result in results)
    columns = ("file", "predicted", "explained", "probability", *(["threshold"] if thresholds else []), "overlay")
    table = Table(title=f"Grad-CAM overlays in {escape(str(out_dir))}")
    for column in columns:
        table.add_column(column, justify="right" if column in ("probability", "threshold") else "left", overflow="fold")
    for result in results:
        if result.error is not None:
            unreadable = f"[red]unreadable: {escape(result.error)}[/red]"
            table.add_row(escape(result.file), unreadable, *[""] * (len(columns) - 2))
            continue
        threshold = [f"{result.threshold:.4f}"] if thresholds else []
        predicted = escape(result.predicted) if result.predicted else "[dim](no label)[/dim]"
        name = escape(result.output.name)
        table.add_row(
            escape(result.file), predicted, escape(result.label), f"{result.probability:.4f}", *threshold, name
        )
    return table


def cache_table(title: str, sizes: Sequence[CacheSize], size_column: str) -> Table:
    """Kind, folder, files and human-readable size of each cache, then their total."""
    table = Table(title=title)
    for column in ("kind", "folder", "files", size_column):
        table.add_column(column, justify="right" if column in ("files", size_column) else "left", overflow="fold")
    for size in sizes:
        table.add_row(size.kind, escape(str(size.folder)), f"{size.files:,}", format_size(size.size_bytes))
    total_bytes = format_size(sum(size.size_bytes for size in sizes))
    table.add_row("total", "", f"{sum(size.files for size in sizes):,}", total_bytes, style="bold")
    return table


RUN_COLUMNS = ("run", "model", "data", "date", "epochs", "best val accuracy", "training time")


def runs_table(listing: RunsListing) -> Table:
    """One row per run, oldest first; a `problem` column when a run is damaged."""
    table = Table(title=f"Runs in {escape(str(listing.folder))}")
    numbers = RUN_COLUMNS[-3:]
    problems = any(run.problem for run in listing.runs)
    for column in (*RUN_COLUMNS, "problem") if problems else RUN_COLUMNS:
        table.add_column(column, justify="right" if column in numbers else "left", overflow="fold")
    for run in listing.runs:
        cells = [
            escape(run.name),
            escape(run.model or "-"),
            escape(run.data or "-"),
            f"{run.date:%Y-%m-%d %H:%M}",
            "-" if run.epochs is None else str(run.epochs),
            _shown(run.best_val_accuracy),
            format_duration(run.seconds),
        ]
        table.add_row(*cells, *([f"[red]{escape(run.problem or '')}[/red]"] if problems else []))
    return table


def format_runs(runs: Sequence[RunSummary], fmt: str) -> str:
    """The listing as CSV or JSON text, one row or object per run."""
    rows = [run.to_dict() for run in runs]
    if fmt == "json":
        return json_text(rows)
    header = list(rows[0]) if rows else ["run"]
    return csv_text(header, [["" if row[key] is None else row[key] for key in header] for row in rows])


def comparison_table(first: RunSummary, second: RunSummary, rows: Sequence[ComparedValue]) -> Table:
    """The two runs in two columns, a section per kind of row; the better value of a pair is marked ✓."""
    table = Table(title="Runs compared", caption="✓ the better value")
    table.add_column("")
    for run in (first, second):
        table.add_column(escape(run.name), overflow="fold")
    if not any(row.section == "options" for row in rows):
        table.add_row("[bold]options[/bold]", "all the same", "all the same", end_section=True)
    section = None
    for row in rows:
        if row.section != section:
            if section is not None:
                table.add_section()
            table.add_row(f"[bold]{row.section}[/bold]", "", "")
            section = row.section
        cells = [_compared(row, value) for value in (row.first, row.second)]
        if row.better is not None:
            cells[row.better] = f"[bold green]{cells[row.better]} ✓[/bold green]"
        table.add_row(f"  {escape(row.name)}", *cells)
    return table


def format_comparison(first: RunSummary, second: RunSummary, rows: Sequence[ComparedValue], fmt: str) -> str:
    """The comparison as CSV or JSON: section, name, each run's value and which run's is better."""
    names = (first.name, second.name)
    cells = [
        [row.section, row.name, row.first, row.second, None if row.better is None else names[row.better]]
        for row in rows
    ]
    if fmt == "json":
        keys = ("section", "name", "first", "second", "better")
        values = [dict(zip(keys, row)) for row in cells]
        return json_text({"first": first.to_dict(), "second": second.to_dict(), "rows": values})
    header = ["section", "name", first.name, second.name, "better"]
    return csv_text(header, [["" if cell is None else cell for cell in row] for row in cells])


def format_duration(seconds: float | None) -> str:
    """`12.3 s`, `4 min 05 s` or `2 h 03 min`; `-` for None."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = round(seconds) // 60
    if minutes < 60:
        return f"{minutes} min {round(seconds) % 60:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _compared(row: ComparedValue, value: object) -> str:
    """A compared value as shown: results to 4 places, the time in minutes, options as given."""
    if row.name == "training time":
        return format_duration(value)
    if row.section == "results" and isinstance(value, float):
        return _shown(value)
    return escape("-" if value is None else str(value))
