"""`imgclf evaluate`: score a run on a labelled folder, or on a CSV's rows (`--labels`), multi-label runs too.

imgclf evaluate RUN photos/test_set
imgclf evaluate RUN --labels labels.csv --split test
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from imgclf.cli.output import print_evaluation, print_multi_label_evaluation, stdout
from imgclf.config import ImgclfError

if TYPE_CHECKING:
    from imgclf.data.folders import FolderIndex
    from imgclf.deploy.predictor import Run


def evaluate_command(args: argparse.Namespace) -> int:
    """`imgclf evaluate RUN DIR`, or `imgclf evaluate RUN --labels CSV [--images DIR] [--split S]`."""
    from imgclf.cli.predicting import finish, load_run, tally_of
    from imgclf.evaluation.evaluate import evaluate_folder, evaluate_index, write_evaluation
    from imgclf.evaluation.report import REPORT_FILE, write_report

    rows = _evaluated_rows(args) if args.labels is not None else None  # the options checked before the run loads
    folder = _evaluated_folder(args) if rows is None else None
    run = load_run(args)
    if rows is not None and rows.multi_label:
        return _evaluate_multi_label(args, run, rows)
    if rows is None:
        evaluation = evaluate_folder(run, folder, args.batch_size, args.tta)
        name = Path(folder).resolve().name
    else:
        evaluation = evaluate_index(run, rows, args.batch_size, args.tta)
        name = Path(args.labels).stem + (f"-{args.split}" if args.split else "")
    tally = tally_of(evaluation.predictions)
    tally.check()  # when no image could be read, its line alone and nothing written
    out_dir = Path(args.out) if args.out else run.run_dir / f"eval-{name}"
    write_evaluation(evaluation, out_dir)
    write_report(run, evaluation, out_dir / REPORT_FILE)
    print_evaluation(evaluation)
    stdout.print(f"Wrote {out_dir / 'metrics.json'}, {out_dir / 'predictions.csv'} and {out_dir / REPORT_FILE}")
    finish(tally, args.strict, str(out_dir / "metrics.json"))
    return 0


def _evaluated_folder(args: argparse.Namespace) -> str:
    """`imgclf evaluate`'s DIR; raises `ImgclfError` when neither it nor --labels is given, or a CSV option is."""
    given = [option for option in ("images", "split") if getattr(args, option) is not None]
    if given:
        raise ImgclfError(f"--{given[0]} goes with --labels CSV. Received: --{given[0]}. Add --labels, or drop it.")
    if args.folder is None:
        raise ImgclfError("Missing DIR: give a labelled folder (DIR/<class>/<image>) or --labels CSV.")
    return args.folder


def _evaluated_rows(args: argparse.Namespace) -> FolderIndex:
    """The images of `imgclf evaluate --labels CSV` (its `--split` rows, or all); DIR cannot be given too."""
    from imgclf.data.run_data import labelled_images
    from imgclf.runs import read_config

    if args.folder is not None:
        raise ImgclfError(
            f"Give DIR or --labels, not both. Received: DIR={args.folder}, --labels={args.labels}. For a CSV whose "
            "paths are relative to DIR, use --images DIR."
        )
    return labelled_images(args.labels, args.images, args.split, read_config(args.run).train.multi_label)


def _evaluate_multi_label(args: argparse.Namespace, run: Run, rows: FolderIndex) -> int:
    """`imgclf evaluate` of a multi-label run on a CSV's rows: `metrics.json` and `predictions.csv`."""
    from imgclf.cli.predicting import finish, tally_of
    from imgclf.evaluation.multi_label import evaluate_multi_label, write_multi_label_evaluation
    from imgclf.evaluation.report import REPORT_FILE, write_report

    evaluation = evaluate_multi_label(run, rows, args.batch_size)
    tally = tally_of(evaluation.predictions)
    tally.check()
    name = Path(args.labels).stem + (f"-{args.split}" if args.split else "")
    out_dir = Path(args.out) if args.out else run.run_dir / f"eval-{name}"
    write_multi_label_evaluation(evaluation, out_dir)
    write_report(run, evaluation, out_dir / REPORT_FILE)
    print_multi_label_evaluation(evaluation.to_dict())
    stdout.print(f"Wrote {out_dir / 'metrics.json'}, {out_dir / 'predictions.csv'} and {out_dir / REPORT_FILE}")
    finish(tally, args.strict, str(out_dir / "metrics.json"))
    return 0
