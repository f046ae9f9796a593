"""The `imgclf` command line: parse, call the library, print, exit (0 ok, 1 user error, 2 usage error).

imgclf train DATA --val VAL [options] [--nproc N]   (N processes: torchrun --standalone --nproc-per-node N -m imgclf)
imgclf predict RUN PATH... [--format table|csv|json] [--output FILE] [--engine auto|torch|onnx|openvino] [--device]
imgclf evaluate RUN DIR [--tta] [--min-confidence P] [--device auto|cpu|cuda]
imgclf report RUN [DIR]
imgclf export RUN [--format onnx]
imgclf summary MODEL_OR_RUN
imgclf demo [--data DIR]
imgclf serve RUN [--host 127.0.0.1] [--port 8000] [--engine auto|torch|onnx|openvino]
imgclf audit DATA [--val DIR] [--test DIR] [--out DIR] [--fail-on leakage,corrupt,...]   (exit 3: a --fail-on find)
imgclf explain RUN IMAGE... [--out DIR] [--class NAME] [--alpha 0.5]
imgclf cache [--clear features|decoded|onnx|all] [--older-than DAYS]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from imgclf.audit import (
    DEFAULT_MIN_SIZE,
    DEFAULT_NEAR_THRESHOLD,
    FAIL_ON_CHOICES,
    AuditReport,
    audit_folders,
    write_audit,
)
from imgclf.caches import ALL, CACHE_KINDS, CacheSize, cache_sizes, clear_caches, format_size
from imgclf.config import (
    AUGMENT_PRESETS,
    CLASS_WEIGHTS,
    DEVICES,
    HEADS,
    OPTIMIZERS,
    PRECISIONS,
    ImgclfError,
    TrainConfig,
    check_min_confidence,
    load_toml,
)
from imgclf.distributed import check_batch_size, is_main_process, launch, torchrun_environment
from imgclf.engine import TrainingInterrupted, make_train_config, train
from imgclf.engines import ENGINES
from imgclf.runs import Prediction, atomic_write_text

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)

AUGMENT_OPTIONS = [f.name for f in dataclasses.fields(AUGMENT_PRESETS["none"])]


class ConsoleLogHandler(logging.Handler):
    """Library log records as plain lines on the terminal, above any progress bar; warnings in yellow."""

    def emit(self, record: logging.LogRecord) -> None:
        style = "yellow" if record.levelno >= logging.WARNING else None
        prefix = "warning: " if record.levelno >= logging.WARNING else ""
        stderr.print(prefix + self.format(record), style=style, markup=False, highlight=False)


class TrainingProgress:
    """A rich progress bar over the steps of each epoch (the library calls it after every step)."""

    def __init__(self, console: Console):
        self.progress = Progress(
            TextColumn("Epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = None
        self.epoch = None

    def __enter__(self) -> TrainingProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def __call__(self, epoch: int, step: int, steps: int) -> None:
        if epoch != self.epoch:
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task("train", total=steps, epoch=epoch)
            self.epoch = epoch
        self.progress.update(self.task, completed=step)


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--val", metavar="DIR", help="validation folder with the same class sub-folders")
    data.add_argument(
        "--val-split",
        type=float,
        metavar="F",
        help="hold out a stratified, seeded fraction of DATA instead of --val (default 0.2)",
    )
    data.add_argument(
        "--strict",
        action="store_true",
        default=None,
        help="fail before training if any image is unreadable (default: skip and list it)",
    )
    data.add_argument(
        "--cache-mem",
        type=int,
        metavar="MB",
        dest="cache_mem_mb",
        help="decode into memory when the images fit in MB, else stream from disk (default 2048)",
    )
    data.add_argument(
        "--no-decode-cache",
        dest="decode_cache",
        action="store_false",
        default=None,
        help="decode every image on every run instead of keeping the decoded, resized pixels on disk "
        "($IMGCLF_CACHE/decoded, default ~/.cache/imgclf/decoded)",
    )
    data.add_argument("--workers", type=int, help="decoding threads / DataLoader workers (default 2)")

    model = parser.add_argument_group("model and optimiser")
    model.add_argument(
        "--model",
        help="a registered model (`imgclf summary --list`), timm:<name> or torchvision:<name> "
        "(default efficientnet_lite0, whose ImageNet weights install with imgclf)",
    )
    model.add_argument("--image-size", type=int, metavar="PX", help="input size (default: the model's)")
    model.add_argument("--head", choices=HEADS, help="head on a backbone (default linear; seed-vgg16: seed)")
    model.add_argument("--weights", metavar="FILE", help="backbone weights from a local file (safetensors or .pth)")
    model.add_argument("--fine-tune", metavar="N|all", help="after the head, unfreeze the last N backbone blocks")
    model.add_argument("--fine-tune-epochs", type=int, metavar="N", help="epochs of fine-tuning (default 5)")
    model.add_argument("--fine-tune-lr", type=float, metavar="LR", help="fine-tuning learning rate (default lr/10)")
    model.add_argument(
        "--no-feature-cache",
        dest="feature_cache",
        action="store_false",
        default=None,
        help="recompute a frozen backbone's features instead of caching them on disk",
    )
    model.add_argument("--optimizer", choices=OPTIMIZERS, help="default adam")
    model.add_argument("--lr", type=float, help="learning rate (default 1e-3)")
    model.add_argument("--epochs", type=int, help="default 30")
    model.add_argument("--batch-size", type=int, help="default 32")
    model.add_argument(
        "--steps-per-epoch",
        type=int,
        metavar="N",
        help="batches per epoch (default: one pass over DATA; the tutorial uses 30)",
    )
    model.add_argument("--seed", type=int, help="makes split, initialisation, augmentation and order repeatable")
    model.add_argument("--patience", type=int, metavar="EPOCHS", help="stop when val_loss stalls this long")
    model.add_argument("--class-weight", choices=CLASS_WEIGHTS, help="auto: inverse class frequency in the loss")
    model.add_argument(
        "--min-confidence",
        type=float,
        metavar="P",
        help="the run labels an image `unsure` when its top probability is below P (default: never)",
    )
    model.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="auto: bf16 where the hardware is fast at it, fp16 on a GPU without bf16; fp16 needs CUDA",
    )
    model.add_argument("--device", choices=DEVICES, help="auto: CUDA when present")

    augment = parser.add_argument_group("augmentation (a preset, then any single setting)")
    augment.add_argument(
        "--augment",
        choices=sorted(AUGMENT_PRESETS),
        help="seed: the tutorial's shear 0.2°, zoom 0.2, flip; default: mild geometry and colour; none (default: none)",
    )
    augment.add_argument("--rotation", type=float, metavar="DEG")
    augment.add_argument("--width-shift", type=float, metavar="F")
    augment.add_argument("--height-shift", type=float, metavar="F")
    augment.add_argument("--shear", type=float, metavar="DEG", help="shear angle in degrees (as Keras)")
    augment.add_argument("--zoom", type=float, metavar="F", help="zoom drawn per axis in [1-F, 1+F]")
    augment.add_argument("--horizontal-flip", action=argparse.BooleanOptionalAction)
    augment.add_argument("--vertical-flip", action=argparse.BooleanOptionalAction)
    augment.add_argument("--brightness", type=float, metavar="F")
    augment.add_argument("--contrast", type=float, metavar="F")
    augment.add_argument("--saturation", type=float, metavar="F")
    augment.add_argument("--fill-mode", choices=("nearest", "constant", "reflect"))


def _add_prediction_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="auto: the fastest installed (openvino, then onnx = onnxruntime, then torch; torch on a GPU); "
        "ONNX engines are checked against PyTorch when loaded",
    )
    parser.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA when present")
    parser.add_argument(
        "--min-confidence",
        type=float,
        metavar="P",
        help="label an image `unsure` when its top probability is below P (default: the run's setting)",
    )


def _load_run(args: argparse.Namespace):
    from imgclf.runs import load

    check_min_confidence(args.min_confidence)  # before the load, which may export the model first
    run = load(args.run, engine=args.engine, device=args.device)
    if args.min_confidence is not None:
        run.min_confidence = args.min_confidence
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgclf",
        description="Train, evaluate and use image classifiers made from folders of labelled photos.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train_parser = commands.add_parser(
        "train",
        help="train a classifier on DATA/<class>/<image>",
        description="Train a classifier on DATA/<class>/**/<image>.",
    )
    train_parser.add_argument("data", nargs="?", metavar="DATA", help="folder with one sub-folder per class")
    train_parser.add_argument("--out", metavar="DIR", help="run directory (default runs/<model>-<timestamp>)")
    train_parser.add_argument("--resume", metavar="RUN", help="continue RUN from its last saved epoch")
    train_parser.add_argument("--config", metavar="FILE.toml", help="options file; command-line options win")
    train_parser.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train in N processes on this machine (DistributedDataParallel through torchrun; --batch-size "
        "stays the global batch and must divide by N; default 1)",
    )
    _add_training_options(train_parser)

    predict = commands.add_parser(
        "predict",
        help="predict the class of image files or folders",
        description="Predict the class of image files or folders (searched recursively).",
    )
    predict.add_argument("run", metavar="RUN", help="run directory made by `imgclf train`")
    predict.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    predict.add_argument("--format", choices=("table", "csv", "json"), default="table")
    predict.add_argument("--output", metavar="FILE", help="write the result to FILE instead of the terminal")
    _add_prediction_options(predict)

    evaluate = commands.add_parser(
        "evaluate",
        help="score a run on a labelled folder",
        description="Score a run on DIR/<class>/<image>: accuracy, per-class precision/recall/F1, confusion "
        "matrix, ROC and AUC (two classes), top-5 accuracy (more than 5 classes), log-loss, calibration, coverage "
        "by confidence and the misclassified files, into metrics.json, predictions.csv and report.html. "
        "A flat folder without class sub-folders gets predictions only.",
    )
    evaluate.add_argument("run", metavar="RUN")
    evaluate.add_argument("folder", metavar="DIR")
    evaluate.add_argument("--out", metavar="DIR", help="where to write the results (default RUN/eval-<DIR name>)")
    _add_prediction_options(evaluate)
    evaluate.add_argument("--tta", action="store_true", help="average with the horizontally flipped image")

    report = commands.add_parser(
        "report",
        help="write a run's report.html",
        description="Evaluate RUN on DIR (default: its validation images) and write one self-contained "
        "report.html: configuration, dataset, curves, metrics, confusion matrix with its images, ROC, "
        "calibration and the misclassified images.",
    )
    report.add_argument("run", metavar="RUN")
    report.add_argument("folder", nargs="?", metavar="DIR", help="a labelled folder (default: the validation images)")
    report.add_argument("--out", metavar="FILE", help="where to write the report (default RUN/report.html)")
    _add_prediction_options(report)
    report.add_argument("--tta", action="store_true", help="average with the horizontally flipped image")

    summary = commands.add_parser(
        "summary",
        help="layer table of a model or a run",
        description="Print the layer table (output shapes, parameters) of a registered model or a run directory.",
    )
    summary.add_argument("target", nargs="?", metavar="MODEL_OR_RUN")
    summary.add_argument("--classes", type=int, default=2, help="number of classes for a model name (default 2)")
    summary.add_argument("--image-size", type=int)
    summary.add_argument("--list", action="store_true", help="list the registered model names")

    export = commands.add_parser(
        "export",
        help="the run's model as ONNX, checked against PyTorch",
        description="Write model.onnx (classes and preprocessing in its metadata) and export.json. Parity is "
        "checked first: the validation images go through PyTorch and onnxruntime, and the export fails if a "
        "top-1 class differs or a probability differs by 1e-4 or more.",
    )
    export.add_argument("run", metavar="RUN")
    export.add_argument("--format", choices=("onnx",), default="onnx")
    export.add_argument("--out", metavar="DIR", help="folder for model.onnx and export.json (default RUN)")
    export.add_argument(
        "--parity-images",
        nargs="+",
        metavar="PATH",
        help="image files or folders to check parity on (default: the run's validation images)",
    )

    demo = commands.add_parser(
        "demo",
        help="the tutorial's car/plane experiment, end to end",
        description="Train the tutorial's experiment 1 (seed-cnn, seed augmentation, Adam, "
        "30 epochs × 30 steps × 32) and predict photos it did not train on.",
    )
    demo.add_argument(
        "--data",
        metavar="DIR",
        help="training_set/, val_set/ and optional test/ (default: the photos shipped with imgclf)",
    )
    demo.add_argument("--out", metavar="DIR", help="run directory (default runs/seed-cnn-<timestamp>)")
    demo.add_argument("--epochs", type=int, help="fewer epochs for a quick look (default 30)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--experiment",
        choices=("cnn", "vgg16", "both"),
        default="cnn",
        help="cnn: the small CNN from scratch (default); vgg16: the frozen ImageNet VGG16; both, side by side",
    )
    demo.add_argument("--vgg16-weights", metavar="FILE", help="a local VGG16 state dict for experiment vgg16")

    serve = commands.add_parser(
        "serve",
        help="a web service and page that classify uploaded photos",
        description="Serve RUN over HTTP: POST /predict and /predict/batch, GET /health and /model, a page at / "
        "to drop photos on, the API's docs at /docs. The model is loaded once; Ctrl-C stops.",
    )
    serve.add_argument("run", metavar="RUN", help="run directory made by `imgclf train`")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)"
    )
    serve.add_argument("--port", type=int, default=8000, help="default 8000")
    serve.add_argument(
        "--engine", choices=ENGINES, default="auto", help="auto: the fastest installed (see `imgclf predict`)"
    )
    serve.add_argument("--max-upload-mb", type=float, metavar="MB", help="largest image accepted (default 10)")
    serve.add_argument("--timeout", type=float, metavar="S", help="most seconds one request may take (default 10)")
    serve.add_argument("--max-batch", type=int, metavar="N", help="most images per model call (default 8)")

    audit = commands.add_parser(
        "audit",
        help="check a dataset: counts, sizes, unreadable files, duplicates, leakage between splits",
        description="Audit DATA/<class>/<image> (and --val, --test): images per class, sizes, modes and formats, "
        "unreadable files, extensions that do not match the format, tiny images, and exact and near duplicates "
        "within and across splits. Writes audit.json and audit.html (thumbnails of every duplicate group); the "
        "data folders are only read. Exit code 3 when a problem named by --fail-on is found.",
    )
    audit.add_argument("data", metavar="DATA", help="folder with one sub-folder per class (the training split)")
    audit.add_argument("--val", metavar="DIR", help="validation folder, audited with DATA")
    audit.add_argument("--test", metavar="DIR", help="test folder, audited with DATA")
    audit.add_argument("--out", metavar="DIR", help="where to write audit.json and audit.html (default audit-<DATA>)")
    audit.add_argument(
        "--near-threshold",
        type=int,
        default=DEFAULT_NEAR_THRESHOLD,
        metavar="BITS",
        help="most of the 64 perceptual-hash bits two near-duplicates may differ in "
        f"(default {DEFAULT_NEAR_THRESHOLD}: resized, recompressed, grey or brightened copies; 0: only equal hashes)",
    )
    audit.add_argument(
        "--min-size",
        type=int,
        default=DEFAULT_MIN_SIZE,
        metavar="PX",
        help=f"list images whose short side is below PX pixels as tiny (default {DEFAULT_MIN_SIZE})",
    )
    audit.add_argument(
        "--fail-on",
        type=_problem_names,
        default=[],
        metavar="LIST",
        help=f"exit 3 when any of these comma-separated problems is found: {','.join(FAIL_ON_CHOICES)}",
    )
    audit.add_argument("--workers", type=int, help="processes decoding images (default: one per CPU core)")

    explain = commands.add_parser(
        "explain",
        help="Grad-CAM heatmaps: where in each image the model sees its class",
        description="Write IMAGE-gradcam.png for each image: the upright photo with a Grad-CAM heatmap over it "
        "(red: the strongest evidence for the class, blue: none). Explains the predicted class unless --class "
        "names another. Works for every CNN: seed-cnn, vgg16, efficientnet_lite*, timm: and torchvision: CNNs.",
    )
    explain.add_argument("run", metavar="RUN", help="run directory made by `imgclf train`")
    explain.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders (searched recursively)")
    explain.add_argument("--out", metavar="DIR", help="folder for the overlays (default RUN/gradcam)")
    explain.add_argument("--class", dest="class_name", metavar="NAME", help="explain this class (default: predicted)")
    explain.add_argument(
        "--alpha", type=float, default=0.5, help="weight of the heatmap over the photo, 0 to 1 (default 0.5)"
    )

    cache = commands.add_parser(
        "cache",
        help="show or clear imgclf's on-disk caches",
        description="List imgclf's caches under $IMGCLF_CACHE (default ~/.cache/imgclf): features (a frozen "
        "backbone's features), decoded (decoded, resized images) and onnx (ONNX exports of runs), with their "
        "files and size. Every entry is computed again when needed, so clearing costs only time.",
    )
    cache.add_argument("--clear", choices=(*CACHE_KINDS, ALL), help="delete the entries of one cache, or of all")
    cache.add_argument(
        "--older-than",
        type=float,
        metavar="DAYS",
        help="with --clear: delete only the entries written more than DAYS days ago",
    )
    return parser


def _version() -> str:
    from imgclf import __version__

    return __version__


def _apply_config_file(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse argv; when `--config FILE.toml` is given, its keys become defaults that argv overrides."""
    args = parser.parse_args(argv)
    if getattr(args, "config", None) is None:
        return args
    values = load_toml(args.config)
    known = set(vars(args)) - {"command", "config"}
    aliases = {"cache_mem": "cache_mem_mb"}
    values = {aliases.get(key, key): value for key, value in values.items()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ImgclfError(
            f"Config file {args.config} has unknown options {unknown}. "
            f"Use option names, e.g. epochs = 10 or batch-size = 16."
        )
    subparser = parser._subparsers._group_actions[0].choices[args.command]  # noqa: SLF001
    subparser.set_defaults(**values)
    return parser.parse_args(argv)


def _train_options(args: argparse.Namespace) -> dict:
    """The training options the user gave (unset ones keep the library's defaults)."""
    names = [field.name for field in dataclasses.fields(TrainConfig) if field.name not in ("data", "augment")]
    options = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    augment_overrides = {name: getattr(args, name) for name in AUGMENT_OPTIONS if getattr(args, name) is not None}
    if args.augment is not None or augment_overrides:
        preset = AUGMENT_PRESETS[args.augment or "none"]
        options["augment"] = dataclasses.replace(preset, **augment_overrides)
    return options


def _without_nproc(argv: Sequence[str]) -> list[str]:
    kept, skip_value = [], False
    for token in argv:
        if skip_value:
            skip_value = False
        elif token == "--nproc":
            skip_value = True
        elif not token.startswith("--nproc="):
            kept.append(token)
    return kept


def _launch_processes(args: argparse.Namespace) -> int:
    """`--nproc N`: check the options here, where an error is one line, then rerun the command under torchrun."""
    if args.resume is not None:
        from imgclf.runs import read_config

        batch_size = read_config(args.resume).train.batch_size
    else:
        batch_size = make_train_config(args.data, **_train_options(args)).batch_size
    check_batch_size(batch_size, args.nproc)
    return launch(args.nproc, _without_nproc(args.argv))


def _train(args: argparse.Namespace) -> int:
    if args.resume is None and args.data is None:
        raise ImgclfError("Missing DATA: give a folder with one sub-folder per class, or --resume RUN.")
    if args.nproc is not None and args.nproc < 1:
        raise ImgclfError(f"Invalid option --nproc. Received: --nproc={args.nproc}. Use 1 or more processes.")
    if args.nproc is not None and args.nproc > 1 and torchrun_environment() is None:
        return _launch_processes(args)
    options = _train_options(args)
    # Under torchrun only the main process draws the progress bar and lists the files.
    with TrainingProgress(stderr) if is_main_process() else contextlib.nullcontext() as progress:
        if args.resume is not None:
            run = train(
                resume=args.resume,
                progress=progress,
                **{k: v for k, v in options.items() if k in ("epochs", "patience")},
            )
        else:
            run = train(config=make_train_config(args.data, **options), progress=progress)
    if is_main_process():
        _print_run_files(run.run_dir)
    return 0


def _print_run_files(run_dir: Path) -> None:
    stdout.print(f"Run directory: {run_dir}")
    for name in (
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
    ):
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


def format_predictions(predictions: Sequence[Prediction], class_names: list[str], fmt: str) -> str:
    """CSV or JSON text: file, label, index, probability of the label, and one probability per class."""
    if fmt == "json":
        return json.dumps([dataclasses.asdict(p) for p in predictions], indent=2) + "\n"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "label", "index", "probability", *[f"p_{name}" for name in class_names], "error"])
    for p in predictions:
        writer.writerow(
            [
                p.file,
                p.label or "",
                "" if p.index is None else p.index,
                "" if p.probability is None else f"{p.probability:.6f}",
                *[f"{p.probabilities[c]:.6f}" if p.probabilities else "" for c in class_names],
                p.error or "",
            ]
        )
    return buffer.getvalue()


def _predict(args: argparse.Namespace) -> int:
    from imgclf.data import list_images

    run = _load_run(args)
    files = list_images(args.paths)
    with Progress(
        TextColumn("Predicting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=stderr, transient=True
    ) as progress:
        task = progress.add_task("predict", total=len(files))
        predictions = []
        for prediction in run.predict_iter(files, batch_size=args.batch_size):
            predictions.append(prediction)
            progress.advance(task)
    if args.format == "table":
        if args.output:
            console = Console(file=io.StringIO(), width=200)
            console.print(predictions_table(predictions))
            atomic_write_text(args.output, console.file.getvalue())
        else:
            stdout.print(predictions_table(predictions))
    else:
        text = format_predictions(predictions, run.class_names, args.format)
        if args.output:
            atomic_write_text(args.output, text)
        else:
            sys.stdout.write(text)
    failed = sum(p.error is not None for p in predictions)
    if failed:
        stderr.print(f"[yellow]{failed} of {len(predictions)} images could not be read (see the error column).")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from imgclf.evaluate import evaluate_folder, write_evaluation
    from imgclf.report import REPORT_FILE, write_report

    run = _load_run(args)
    evaluation = evaluate_folder(run, args.folder, args.batch_size, args.tta)
    out_dir = Path(args.out) if args.out else run.run_dir / f"eval-{Path(args.folder).resolve().name}"
    write_evaluation(evaluation, out_dir)
    write_report(run, evaluation, out_dir / REPORT_FILE)
    _print_evaluation(evaluation)
    stdout.print(f"Wrote {out_dir / 'metrics.json'}, {out_dir / 'predictions.csv'} and {out_dir / REPORT_FILE}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from imgclf.data import validation_index
    from imgclf.evaluate import evaluate_folder, evaluate_index
    from imgclf.report import REPORT_FILE, write_report

    run = _load_run(args)
    if args.folder is not None:
        evaluation = evaluate_folder(run, args.folder, args.batch_size, args.tta)
    else:
        evaluation = evaluate_index(run, validation_index(run.config.train), args.batch_size, args.tta)
    path = write_report(run, evaluation, args.out or run.run_dir / REPORT_FILE)
    _print_evaluation(evaluation)
    stdout.print(f"Wrote {path}")
    return 0


def _print_evaluation(evaluation) -> None:
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


def _export(args: argparse.Namespace) -> int:
    from imgclf.export import export_onnx
    from imgclf.runs import load

    result = export_onnx(load(args.run), args.out, args.parity_images)
    stdout.print(f"Parity: {result.parity.describe()}")
    stdout.print(f"Wrote {result.onnx_path} and {result.report_path} in {result.seconds:.1f} s")
    return 0


def _summary(args: argparse.Namespace) -> int:
    from imgclf.config import Preprocessing
    from imgclf.models import create_model, get_spec, list_models, summarize
    from imgclf.runs import load

    if args.list or args.target is None:
        stdout.print("\n".join(list_models()))
        return 0
    if Path(args.target).is_dir():
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

    with TrainingProgress(stderr) as progress:
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
        _print_run_files(result.run.run_dir)
    return 0


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


def _serve(args: argparse.Namespace) -> int:
    from imgclf.serve import ServeOptions, serve

    given = {
        "max_upload_bytes": None if args.max_upload_mb is None else round(args.max_upload_mb * 1024 * 1024),
        "timeout_s": args.timeout,
        "max_batch_size": args.max_batch,
    }
    options = ServeOptions(**{name: value for name, value in given.items() if value is not None})
    serve(args.run, args.host, args.port, args.engine, options)
    return 0


EXIT_AUDIT_PROBLEMS = 3
AUDIT_ROWS_SHOWN = 10


def _problem_names(text: str) -> list[str]:
    """`--fail-on`'s comma-separated list, checked against the problems the audit can name."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in FAIL_ON_CHOICES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown problem {', '.join(unknown) or '(none given)'}; choose from {','.join(FAIL_ON_CHOICES)}. "
            f"Received: --fail-on {text}"
        )
    return names


def _audit(args: argparse.Namespace) -> int:
    folders = {name: folder for name, folder in (("train", args.data), ("val", args.val), ("test", args.test))}
    progress = Progress(
        TextColumn("Auditing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=stderr, transient=True
    )
    with progress:
        task = progress.add_task("audit", total=None)
        report = audit_folders(
            {name: folder for name, folder in folders.items() if folder is not None},
            near_threshold=args.near_threshold,
            min_size=args.min_size,
            workers=args.workers,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    written = write_audit(report, Path(args.out) if args.out else Path(f"audit-{Path(args.data).resolve().name}"))
    _print_audit(report)
    stdout.print(f"Wrote {written[0]} and {written[1]}")
    failures = report.failures(args.fail_on)
    if failures:
        found = ", ".join(f"{name} ({count})" for name, count in failures.items())
        stderr.print(f"[red]Found {escape(found)}[/red], named by --fail-on: exit code {EXIT_AUDIT_PROBLEMS}.")
        return EXIT_AUDIT_PROBLEMS
    return 0


def _print_audit(report: AuditReport) -> None:
    """The audit's terminal summary: classes per split, image sizes, problem counts, then the first of each."""
    classes = Table(title=f"Images per class ({report.seconds:.1f} s)")
    classes.add_column("class")
    for split in report.splits:
        classes.add_column(escape(split.name), justify="right")
    for name in dict.fromkeys(name for split in report.splits for name in split.class_names):
        counts = [dict(zip(split.class_names, split.class_counts)).get(name) for split in report.splits]
        classes.add_row(escape(name), *["-" if count is None else str(count) for count in counts])
    classes.add_row("total", *[str(sum(split.class_counts)) for split in report.splits], style="bold")
    stdout.print(classes)
    for message in [*report.warnings, *(split.imbalance for split in report.splits if split.imbalance)]:
        stderr.print(f"[yellow]warning:[/yellow] {escape(message)}")

    stats = report.statistics()
    sizes = Table(title=f"{stats['images']} readable images")
    for column in ("", "min", "median", "max"):
        sizes.add_column(column, justify="right" if column else "left")
    for name in ("width", "height", "bytes"):
        if stats[name] is not None:
            sizes.add_row(name, *[f"{stats[name][key]:,.0f}" for key in ("min", "median", "max")])
    stdout.print(sizes)
    for name in ("modes", "formats"):
        stdout.print(f"{name}: " + ", ".join(f"{escape(str(key))} {count}" for key, count in stats[name].items()))

    groups = report.groups
    problems = Table(title="Problems")
    problems.add_column("problem")
    problems.add_column("count", justify="right")
    problems.add_column("--fail-on")
    for label, count, name in (
        ("unreadable files", len(report.unreadable), "corrupt"),
        ("extension does not match the format", len(report.mismatched), "mismatch"),
        (f"tiny images (short side under {report.min_size} px)", len(report.tiny), "tiny"),
        ("imbalanced splits", report.problems()["imbalance"], "imbalance"),
        ("exact duplicate groups", sum(g.kind == "exact" for g in groups), "duplicates"),
        (
            f"near-duplicate groups (pHash within {report.near_threshold} bits)",
            sum(g.kind == "near" for g in groups),
            "duplicates",
        ),
        ("duplicate groups across splits", sum(g.leakage for g in groups), "leakage"),
        ("duplicate groups across classes", sum(g.label_conflict for g in groups), ""),
    ):
        problems.add_row(label, f"[red]{count}[/red]" if count else "0", name)
    stdout.print(problems)

    _print_some("Unreadable files", ("file", "reason"), [(f.display_name(), f.facts.error) for f in report.unreadable])
    _print_some(
        "Extension does not match the format",
        ("file", "format"),
        [(f.display_name(), f.facts.format) for f in report.mismatched],
    )
    _print_some(
        "Tiny images",
        ("file", "width × height"),
        [(f.display_name(), f"{f.facts.width} × {f.facts.height}") for f in report.tiny],
    )
    _print_some(
        "Duplicate groups",
        ("kind", "where", "files"),
        [
            (
                group.kind if group.kind == "exact" else f"near ({group.distance} bits)",
                ("[red]across splits[/red]" if group.leakage else f"within {group.splits[0]}")
                + (" [red]and classes[/red]" if group.label_conflict else ""),
                "\n".join(escape(name) for name in group.names()),
            )
            for group in groups
        ],
        markup=True,
    )


def _print_some(title: str, header: Sequence[str], rows: Sequence[Sequence[str]], markup: bool = False) -> None:
    """A table of the first `AUDIT_ROWS_SHOWN` rows, saying how many more audit.json holds; nothing when empty."""
    if not rows:
        return
    table = Table(title=title)
    for column in header:
        table.add_column(column, overflow="fold")
    for row in rows[:AUDIT_ROWS_SHOWN]:
        table.add_row(*(cell if markup else escape(str(cell)) for cell in row))
    stdout.print(table)
    if len(rows) > AUDIT_ROWS_SHOWN:
        stdout.print(f"… and {len(rows) - AUDIT_ROWS_SHOWN} more in audit.json")


def _explain(args: argparse.Namespace) -> int:
    from imgclf.data import list_images
    from imgclf.explain import explain_files
    from imgclf.runs import load

    run = load(args.run)
    files = list_images(args.images)
    out_dir = Path(args.out) if args.out else run.run_dir / "gradcam"
    progress = Progress(
        TextColumn("Explaining"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=stderr, transient=True
    )
    with progress:
        task = progress.add_task("explain", total=len(files))

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done)

        results = explain_files(run, files, out_dir, args.class_name, args.alpha, progress=advance)
    table = Table(title=f"Grad-CAM overlays in {escape(str(out_dir))}")
    for column in ("file", "predicted", "explained", "probability", "overlay"):
        table.add_column(column, justify="right" if column == "probability" else "left", overflow="fold")
    for result in results:
        if result.error is not None:
            table.add_row(escape(result.file), f"[red]unreadable: {escape(result.error)}[/red]", "", "", "")
        else:
            table.add_row(
                escape(result.file),
                escape(result.predicted),
                escape(result.label),
                f"{result.probability:.4f}",
                escape(result.output.name),
            )
    stdout.print(table)
    failed = sum(result.error is not None for result in results)
    if failed:
        stderr.print(f"[yellow]{failed} of {len(results)} images could not be read (see the table).")
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


COMMANDS = {
    "train": _train,
    "predict": _predict,
    "evaluate": _evaluate,
    "summary": _summary,
    "export": _export,
    "report": _report,
    "demo": _demo,
    "serve": _serve,
    "audit": _audit,
    "explain": _explain,
    "cache": _cache,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    # imgclf's own progress lines at INFO; other libraries (the ONNX exporter is chatty) only from WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[ConsoleLogHandler()], force=True)
    logging.getLogger("imgclf").setLevel(logging.INFO)
    parser = build_parser()
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        args = _apply_config_file(parser, argv)
        args.argv = argv  # `train --nproc N` runs the same command again under torchrun
        return COMMANDS[args.command](args)
    except TrainingInterrupted as error:
        if is_main_process():  # under torchrun every process stops; one says how to resume
            stderr.print(f"[yellow]{escape(str(error))}[/yellow]")
        return 130
    except ImgclfError as error:
        stderr.print(f"[red]error:[/red] {escape(str(error))}", highlight=False)
        return 1
    except KeyboardInterrupt:
        stderr.print("[yellow]Interrupted.[/yellow]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
