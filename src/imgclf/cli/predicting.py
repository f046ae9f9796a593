"""`imgclf predict`: to the terminal, to a file (a CSV row by row, resumable, in several processes), or sorted
into one folder per class; exit code 1 when no image could be read (with `--strict`, when any could not).

Imported once the command line is parsed, like `commands.py`: it imports PyTorch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from imgclf.cli.output import (
    PredictionStream,
    predictions_table,
    progress_bar,
    progress_callback,
    sorted_table,
    stdout,
    table_text,
    warn_unreadable,
)
from imgclf.config import ConfigError, check_min_confidence
from imgclf.data.folders import list_images
from imgclf.deploy.batch import Tally, batched, predict_to_csv
from imgclf.deploy.predictor import Prediction, Run, load
from imgclf.deploy.sorting import check_out_dir, sort_into
from imgclf.devices import resolve_device
from imgclf.files import atomic_write_text, atomic_writer, is_main_process
from imgclf.runs import read_config
from imgclf.training.distributed import Processes, connect, launch, torchrun_environment

if TYPE_CHECKING:
    from imgclf.evaluation.explain import ExplainedFile


def predict(args: argparse.Namespace) -> int:
    """`imgclf predict`; with `--nproc N` outside torchrun, the same command again in N processes."""
    _check_options(args)
    if (args.nproc or 1) > 1 and torchrun_environment() is None:
        read_config(args.run)  # the run's and the paths' errors in one line, before any process starts
        list_images(args.paths)
        return launch(args.nproc, without_nproc(args.argv))
    processes = connect(resolve_device(args.device))
    try:
        run = load_run(args, str(processes.device))
        files = list_images(args.paths)
        if args.sort_into is not None:
            tally = _sort(args, run, files)
        elif args.output is not None and args.format == "csv":
            tally = _predict_to_csv_file(args, run, files, processes)
        else:
            tally = _predict_to_terminal(args, run, files)
    finally:
        processes.close()
    finish(tally, args.strict, "the error column" if args.sort_into is None else f"{args.sort_into}/predictions.csv")
    return 0


def load_run(args: argparse.Namespace, device: str | None = None) -> Run:
    """The run of `args.run` on `--engine` and `device` (default `--device`), with `--min-confidence` applied."""
    check_min_confidence(args.min_confidence)  # before the load, which may export the model first
    run = load(args.run, engine=args.engine, device=device or args.device)
    if args.min_confidence is not None:
        run.min_confidence = args.min_confidence
    return run


def finish(tally: Tally, strict: bool, where: str) -> None:
    """The summary line when some images could not be read; the error (exit code 1) when none could be, or any
    could not and `strict` is set."""
    if is_main_process():
        warn_unreadable(tally.unreadable, tally.images, where)
    tally.check(strict)


def tally_of(results: Iterable[Prediction | ExplainedFile]) -> Tally:
    """The tally of predictions or explanations already made (each has `file` and `error`)."""
    tally = Tally()
    for result in results:
        tally.count(result.file, result.error)
    return tally


def without_nproc(argv: Sequence[str]) -> list[str]:
    """The command line without `--nproc N`, to run again in each process torchrun starts."""
    kept, skip_value = [], False
    for token in argv:
        if skip_value:
            skip_value = False
        elif token == "--nproc":
            skip_value = True
        elif not token.startswith("--nproc="):
            kept.append(token)
    return kept


def _check_options(args: argparse.Namespace) -> None:
    """Refuse options that do not go together, before anything is loaded."""
    several = (args.nproc or 1) > 1 or torchrun_environment() is not None
    processes_flag = "--nproc" if args.nproc else "torchrun"
    if args.sort_into is not None:
        clashes = [
            flag
            for flag, given in (
                ("--output", args.output),
                ("--format", args.format != "table"),
                (processes_flag, several),
            )
            if given
        ]
        if clashes:
            raise ConfigError(
                f"--sort-into writes DIR/predictions.csv itself, in one process. Received: --sort-into with "
                f"{', '.join(clashes)}. Leave out {' and '.join(clashes)}, or --sort-into.",
                "--sort-into",
            )
        check_out_dir(Path(args.sort_into), args.paths)
        return
    if args.link:
        raise ConfigError(
            "--link only changes how --sort-into copies. Received: --link. Add --sort-into DIR.", "--link"
        )
    for flag, given in (("--resume", args.resume), (processes_flag, several)):
        if given and (args.output is None or args.format != "csv"):
            output = "no --output" if args.output is None else f"--output {args.output}"
            raise ConfigError(
                f"{flag} needs a CSV file to write row by row. Received: {flag} with --format {args.format} and "
                f"{output}. Add --format csv --output FILE.",
                flag,
            )


def _predict_to_csv_file(args: argparse.Namespace, run: Run, files: list[str], processes: Processes) -> Tally:
    """Rows into `--output` as each batch is done (each process its share, merged by the first)."""
    if not processes.is_main:
        return predict_to_csv(run, files, args.output, args.batch_size, args.resume, processes)
    with progress_callback("Predicting") as advance:
        tally = predict_to_csv(run, files, args.output, args.batch_size, args.resume, processes, advance)
    return tally


def _predict_to_terminal(args: argparse.Namespace, run: Run, files: list[str]) -> Tally:
    """A table, CSV or JSON on the terminal (or a table or JSON in `--output`), written as it comes but for the
    table, and only once an image could be read: when none can be, the error is the only line."""
    if args.format == "table":
        predictions: list[Prediction] = []
        tally = _stream(run, files, args.batch_size, predictions.extend)
        if tally.unreadable < tally.images:
            if args.output:
                atomic_write_text(args.output, table_text(predictions_table(predictions)))
            else:
                stdout.print(predictions_table(predictions))
        return tally
    if args.output is None:
        stream = PredictionStream(sys.stdout.write, args.format, run.class_names)
        tally = _stream(run, files, args.batch_size, stream)
        tally.check()  # when no image could be read, its line alone
        stream.close()
        return tally
    with atomic_writer(args.output) as file:
        stream = PredictionStream(lambda text: file.write(text.encode("utf-8")), args.format, run.class_names)
        tally = _stream(run, files, args.batch_size, stream)
        tally.check()  # no file of errors alone
        stream.close()
    return tally


def _stream(run: Run, files: list[str], batch_size: int, write: Callable[[list[Prediction]], None]) -> Tally:
    """Predict `files` a batch at a time under a progress bar, handing each batch to `write` once one image of
    them could be read (the unreadable ones before it wait for it)."""
    tally, held = Tally(), []
    with progress_bar("Predicting", rate=True) as progress:
        task = progress.add_task("predict", total=len(files))
        for batch in batched(run.predict_iter(files, batch_size), batch_size):
            for prediction in batch:
                tally.count(prediction.file, prediction.error)
            held += batch
            if tally.unreadable < tally.images:
                write(held)
                held = []
            progress.advance(task, len(batch))
    return tally


def _sort(args: argparse.Namespace, run: Run, files: list[str]) -> Tally:
    """Copies (or links) into `--sort-into DIR/<label>/`, then the folders' counts."""
    with progress_callback("Sorting") as advance:
        result = sort_into(run, files, args.sort_into, args.link, args.batch_size, advance)
    result.tally.check()  # when no image could be read, its line alone
    if result.tally.images:
        stdout.print(sorted_table(result, Path(args.sort_into)))
    if result.skipped:
        stdout.print(f"Skipped {result.skipped:,} images sorted before (recorded in {result.csv_path}).")
    stdout.print(f"Wrote {result.csv_path}")
    return result.tally
