"""The command line's options: one sub-parser per command (`imgclf train`'s in `train_options.py`), parsed once;
a `--config FILE.toml` fills the rest.

Only torch-free modules are imported here, so `imgclf --help` and a usage error answer at once.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence

from imgclf import __version__
from imgclf.audit.options import (
    DEFAULT_MIN_SIZE,
    DEFAULT_MODEL,
    DEFAULT_NEAR_THRESHOLD,
    DEFAULT_SIMILARITY,
    FAIL_ON_CHOICES,
)
from imgclf.caches import ALL, CACHE_KINDS
from imgclf.cli.config_file import apply_config_file
from imgclf.cli.train_options import add_train_options
from imgclf.config import DEVICES, ENGINES


def finite_float(text: str) -> float:
    """argparse's `type` for a number option: a float that is not NaN or infinite (`train` checks its own in
    `config.validate`, as its --config file's values go there too)."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


AddCommand = Callable[..., argparse.ArgumentParser]
"""`add_parser` of the sub-parsers: adds one command and returns its parser."""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse argv; with `train --config FILE.toml`, the file's values fill the options argv leaves unset."""
    parser, train_options = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "config", None) is not None:
        apply_config_file(args, train_options)
    return args


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.Action]]:
    """The `imgclf` parser and its sub-commands, and `imgclf train`'s options by destination (what a `--config`
    file may set)."""
    parser = argparse.ArgumentParser(
        prog="imgclf",
        description="Train, evaluate and use image classifiers made from folders of labelled photos.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train_options = _add_train(commands.add_parser)
    for add in (
        _add_predict,
        _add_evaluate,
        _add_report,
        _add_summary,
        _add_export,
        _add_demo,
        _add_serve,
        _add_audit,
        _add_fix,
        _add_explain,
        _add_cache,
        _add_runs,
        _add_studio,
    ):
        add(commands.add_parser)
    return parser, {action.dest: action for action in train_options}


def _add_train(add_command: AddCommand) -> list[argparse.Action]:
    train = add_command(
        "train",
        help="train a classifier on DATA/<class>/<image>",
        description="Train a classifier on DATA/<class>/**/<image>.",
    )
    return add_train_options(train)


def _add_prediction_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--batch-size", type=_at_least(1), default=32, metavar="N", help="images per model call (default 32)"
    )
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
        type=finite_float,
        metavar="P",
        help="label an image `unsure` when its top probability is below P (default: the run's setting)",
    )


def _add_strict(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit with code 1 when any image cannot be read (without it: only when none can be)",
    )


def _add_predict(add_command: AddCommand) -> None:
    predict = add_command(
        "predict",
        help="predict the class of image files or folders",
        description="Predict the class of image files or folders (searched recursively).",
    )
    predict.add_argument("run", metavar="RUN", help="run directory made by `imgclf train`")
    predict.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    predict.add_argument("--format", choices=("table", "csv", "json"), default="table")
    predict.add_argument(
        "--output",
        metavar="FILE",
        help="write the result to FILE instead of the terminal (a CSV row by row, as each batch is done)",
    )
    predict.add_argument(
        "--resume",
        action="store_true",
        help="with --format csv --output FILE: keep the rows FILE holds and predict the rest",
    )
    predict.add_argument(
        "--sort-into",
        metavar="DIR",
        help="copy each image into DIR/<label>/ (DIR/unsure/ below --min-confidence), recorded in "
        "DIR/predictions.csv; the photos are only read, and sorting again skips what is done",
    )
    predict.add_argument(
        "--link", action="store_true", help="with --sort-into: hard-link instead of copying (copies across disks)"
    )
    predict.add_argument(
        "--nproc",
        type=_at_least(1),
        metavar="N",
        help="with --format csv --output FILE: predict in N processes (torchrun), each a share of the images",
    )
    _add_prediction_options(predict)
    _add_strict(predict)


def _add_evaluate(add_command: AddCommand) -> None:
    evaluate = add_command(
        "evaluate",
        help="score a run on a labelled folder",
        description="Score a run on DIR/<class>/<image>: accuracy, per-class precision/recall/F1, confusion "
        "matrix, ROC and AUC (two classes), top-5 accuracy (more than 5 classes), log-loss, calibration, coverage "
        "by confidence and the misclassified files, into metrics.json, predictions.csv and report.html. "
        "A flat folder without class sub-folders gets predictions only. --labels CSV scores a CSV's file,label "
        "rows instead of DIR.",
    )
    evaluate.add_argument("run", metavar="RUN")
    evaluate.add_argument("folder", nargs="?", metavar="DIR")
    evaluate.add_argument("--labels", metavar="CSV", help="score the images of a CSV's file,label rows instead of DIR")
    evaluate.add_argument("--images", metavar="DIR", help="the folder the --labels paths are relative to")
    evaluate.add_argument(
        "--split", choices=("train", "val", "test"), help="score only the CSV's rows of this split (default: all)"
    )
    evaluate.add_argument("--out", metavar="DIR", help="where to write the results (default RUN/eval-<DIR name>)")
    _add_prediction_options(evaluate)
    evaluate.add_argument("--tta", action="store_true", help="average with the horizontally flipped image")
    _add_strict(evaluate)


def _add_report(add_command: AddCommand) -> None:
    report = add_command(
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


def _add_summary(add_command: AddCommand) -> None:
    summary = add_command(
        "summary",
        help="layer table of a model or a run",
        description="Print the layer table (output shapes, parameters) of a registered model or a run directory.",
    )
    summary.add_argument("target", nargs="?", metavar="MODEL_OR_RUN")
    summary.add_argument(
        "--classes", type=_at_least(2), default=2, help="number of classes for a model name (default 2)"
    )
    summary.add_argument("--image-size", type=_at_least(16), metavar="PX", help="input size (default: the model's)")
    summary.add_argument("--list", action="store_true", help="list the registered model names")


def _add_export(add_command: AddCommand) -> None:
    export = add_command(
        "export",
        help="the run's model as ONNX, checked against PyTorch",
        description="Write model.onnx (classes and preprocessing in its metadata) and export.json. Parity is "
        "checked first: validation images the run keeps go through PyTorch and onnxruntime, and the export fails "
        "if a top-1 class differs or a probability differs by 1e-4 or more.",
    )
    export.add_argument("run", metavar="RUN")
    export.add_argument("--format", choices=("onnx",), default="onnx")
    export.add_argument("--out", metavar="DIR", help="folder for model.onnx and export.json (default RUN)")
    export.add_argument(
        "--parity-images",
        nargs="+",
        metavar="PATH",
        help="image files or folders to check parity on (default: the validation images the run keeps)",
    )


def _add_demo(add_command: AddCommand) -> None:
    demo = add_command(
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


def _add_serve(add_command: AddCommand) -> None:
    serve = add_command(
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
    serve.add_argument("--max-upload-mb", type=finite_float, metavar="MB", help="largest image accepted (default 10)")
    serve.add_argument(
        "--timeout", type=finite_float, metavar="S", help="most seconds one request may take (default 10)"
    )
    serve.add_argument("--max-batch", type=int, metavar="N", help="most images per model call (default 8)")
    serve.add_argument(
        "--max-pixels", type=int, metavar="N", help="most pixels of one image, read from its header (default 40000000)"
    )


def _add_studio(add_command: AddCommand) -> None:
    studio = add_command(
        "studio",
        help="a local browser app: collect and fix photos, train, inspect, test and export",
        description="Open the imgclf studio, a browser app over a WORKSPACE folder of projects, on this machine "
        "only (127.0.0.1). It prints its address and opens the browser; Ctrl-C stops. Its API is described at "
        "/openapi.json.",
    )
    studio.add_argument(
        "workspace",
        nargs="?",
        default="imgclf-studio",
        metavar="WORKSPACE",
        help="folder of projects, made when missing (default ./imgclf-studio)",
    )
    studio.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)"
    )
    studio.add_argument("--port", type=int, default=0, help="default 0: any free port")
    studio.add_argument("--no-browser", action="store_true", help="print the address without opening a browser")
    studio.add_argument("--max-upload-mb", type=finite_float, metavar="MB", help="largest photo accepted (default 25)")
    studio.add_argument(
        "--max-pixels", type=int, metavar="N", help="most pixels of one photo, read from its header (default 40000000)"
    )


def _add_audit(add_command: AddCommand) -> None:
    audit = add_command(
        "audit",
        help="check a dataset: counts, sizes, unreadable files, duplicates, leakage between splits",
        description="Audit DATA/<class>/<image> (and --val, --test): images per class, sizes, modes and formats, "
        "unreadable, mismatched or tiny files, image quality, duplicates within and across splits, and by a backbone's "
        "features label issues, outliers and near-duplicates. Writes audit.json, audit.html and label-issues.csv; the "
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
    _add_audit_model_options(audit)


def _add_audit_model_options(audit: argparse.ArgumentParser) -> None:
    backbone = audit.add_mutually_exclusive_group()
    backbone.add_argument(
        "--model",
        metavar="NAME",
        help=f"backbone for label issues, outliers, near-duplicates (default {DEFAULT_MODEL})",
    )
    backbone.add_argument("--no-model", action="store_true", help="run no backbone: skip those three checks")
    audit.add_argument(
        "--similarity",
        type=finite_float,
        default=DEFAULT_SIMILARITY,
        metavar="COS",
        help=f"lowest cosine similarity of two pictures' features for near-duplicates (default {DEFAULT_SIMILARITY})",
    )


def _add_fix(add_command: AddCommand) -> None:
    fix = add_command(
        "fix",
        help="apply the relabel/remove/keep actions of an audit's label-issues.csv; undo them",
        description="Move each relabel row's file to its suggested class folder and each remove row's file to "
        "DATA.quarantine beside DATA; keep rows stay. Every row is checked first, nothing is overwritten or "
        "deleted, and a journal beside ISSUES.csv lets --undo put every file back.",
    )
    fix.add_argument("issues", nargs="?", metavar="ISSUES.csv", help="rows of file,given,suggested,score,action")
    fix.add_argument("--data", metavar="DIR", help="the data folder the rows' files are in (required to fix)")
    fix.add_argument("--undo", metavar="JOURNAL", help="put back every file the fix with this journal moved")
    fix.add_argument("--dry-run", action="store_true", help="print the moves and make none")
    fix.add_argument("--create-classes", action="store_true", help="create suggested classes that have no folder")


def _add_explain(add_command: AddCommand) -> None:
    explain = add_command(
        "explain",
        help="Grad-CAM heatmaps: where in each image the model sees its class",
        description="Write IMAGE-gradcam.png for each image: the upright photo with a Grad-CAM heatmap over it "
        "(red: the strongest evidence for the class, blue: none). Explains the predicted class unless --class "
        "names another; a multi-label run gets IMAGE-LABEL-gradcam.png for each label it predicts. Works for every "
        "CNN: seed-cnn, vgg16, efficientnet_lite*, timm: and torchvision: CNNs.",
    )
    explain.add_argument("run", metavar="RUN", help="run directory made by `imgclf train`")
    explain.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders (searched recursively)")
    explain.add_argument("--out", metavar="DIR", help="folder for the overlays (default RUN/gradcam)")
    explain.add_argument("--class", dest="class_name", metavar="NAME", help="explain this class (default: predicted)")
    explain.add_argument(
        "--alpha", type=finite_float, default=0.5, help="weight of the heatmap over the photo, 0 to 1 (default 0.5)"
    )
    _add_strict(explain)


def _add_cache(add_command: AddCommand) -> None:
    cache = add_command(
        "cache",
        help="show or clear imgclf's on-disk caches",
        description="List imgclf's caches under $IMGCLF_CACHE (default ~/.cache/imgclf): features (a frozen "
        "backbone's features), decoded (decoded, resized images) and onnx (ONNX exports of runs), with their "
        "files and size. Every entry is computed again when needed, so clearing costs only time.",
    )
    cache.add_argument("--clear", choices=(*CACHE_KINDS, ALL), help="delete the entries of one cache, or of all")
    cache.add_argument(
        "--older-than",
        type=finite_float,
        metavar="DAYS",
        help="with --clear: delete only the entries written more than DAYS days ago",
    )


def _add_runs(add_command: AddCommand) -> None:
    runs = add_command(
        "runs",
        help="list the runs in a folder, or compare two",
        description="List the run directories in DIR, oldest first: model, data, date of the last epoch, epochs "
        "trained, best val accuracy (the kept weights') and training time; a damaged run is listed with what is "
        "wrong. --compare A B sets two runs side by side: the options that differ, the data, the scores, epochs "
        "and time, with the better value marked. Reads the runs' files only, so it answers at once.",
    )
    runs.add_argument("folder", nargs="?", default="runs", metavar="DIR", help="folder of runs (default runs)")
    runs.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="two run directories, as paths or by their names in DIR",
    )
    runs.add_argument("--format", choices=("table", "csv", "json"), default="table")


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than `minimum`."""

    def whole_number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, received {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"use {minimum} or more, received {value}")
        return value

    return whole_number


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
