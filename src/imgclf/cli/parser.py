"""The command line's options: one sub-parser per command, and the `--config FILE.toml` defaults."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence

from imgclf.audit import DEFAULT_MIN_SIZE, DEFAULT_MODEL, DEFAULT_NEAR_THRESHOLD, DEFAULT_SIMILARITY, FAIL_ON_CHOICES
from imgclf.caches import ALL, CACHE_KINDS
from imgclf.config import AUGMENT_PRESETS, CLASS_WEIGHTS, DEVICES, HEADS, OPTIMIZERS, PRECISIONS, ImgclfError, load_toml
from imgclf.deploy.engines import ENGINES

AUGMENT_OPTIONS = [f.name for f in dataclasses.fields(AUGMENT_PRESETS["none"])]


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
        type=float,
        metavar="P",
        help="label an image `unsure` when its top probability is below P (default: the run's setting)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The `imgclf` parser and its sub-commands."""
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
    summary.add_argument(
        "--classes", type=_at_least(2), default=2, help="number of classes for a model name (default 2)"
    )
    summary.add_argument("--image-size", type=_at_least(16), metavar="PX", help="input size (default: the model's)")
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
    backbone = audit.add_mutually_exclusive_group()
    backbone.add_argument(
        "--model",
        metavar="NAME",
        help=f"backbone for label issues, outliers, near-duplicates (default {DEFAULT_MODEL})",
    )
    backbone.add_argument("--no-model", action="store_true", help="run no backbone: skip those three checks")
    similarity = (
        f"lowest cosine similarity of two pictures' features for near-duplicates (default {DEFAULT_SIMILARITY})"
    )
    audit.add_argument("--similarity", type=float, default=DEFAULT_SIMILARITY, metavar="COS", help=similarity)

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


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse argv; when `--config FILE.toml` is given, its keys become defaults that argv overrides."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "config", None) is None:
        return args
    values = _config_file_values(args.config)
    subparser = parser._subparsers._group_actions[0].choices[args.command]  # noqa: SLF001
    actions = {action.dest: action for action in subparser._actions}  # noqa: SLF001
    unknown = sorted(set(values) - set(vars(args)) - {"command", "config"})
    if unknown:
        raise ImgclfError(
            f"Config file {args.config} has unknown options {unknown}. "
            f"Use option names, e.g. epochs = 10 or batch-size = 16."
        )
    # The command line wins, also over the config file's other way of choosing the validation images.
    for given, other in (("val", "val_split"), ("val_split", "val")):
        if getattr(args, given) is not None:
            values.pop(other, None)
    subparser.set_defaults(**{key: _config_value(actions[key], value, args.config) for key, value in values.items()})
    from_file = {actions[key].option_strings[-1] for key in values if actions[key].option_strings}
    from_file -= {action.option_strings[-1] for action in actions.values() if _given(action, args)}
    args = parser.parse_args(argv)
    args.options_from_config = from_file
    return args


def _config_file_values(path: str) -> dict:
    """The `--config` file's values by option destination: `cache-mem` is `cache_mem_mb`, and
    `no-decode-cache = true` (as on the command line) is `decode_cache = false`."""
    values = load_toml(path)
    for negative in ("no_decode_cache", "no_feature_cache"):
        if negative in values:
            value = values.pop(negative)
            if not isinstance(value, bool):
                raise ImgclfError(_bad_value(path, negative.replace("_", "-"), value, "true or false"))
            values[negative.removeprefix("no_")] = not value
    return {("cache_mem_mb" if key == "cache_mem" else key): value for key, value in values.items()}


def _given(action: argparse.Action, args: argparse.Namespace) -> bool:
    """Whether the command line itself set `action`'s option (the config file's defaults not yet applied)."""
    return bool(action.option_strings) and getattr(args, action.dest, None) is not None


def _config_value(action: argparse.Action, value: object, path: str) -> object:
    """A `--config` file's value for `action`, checked and converted as argparse does a command-line value."""
    if action.nargs == 0:  # a flag: the value is what it sets, e.g. strict = true or decode-cache = false
        expected = "true or false"
        if isinstance(value, bool):
            return value
    else:
        expected = f"one of {', '.join(map(str, action.choices))}" if action.choices else _kind(action.type)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            try:
                converted = action.type(str(value)) if action.type else str(value)
            except (TypeError, ValueError, argparse.ArgumentTypeError):
                converted = None
            if converted is not None and (not action.choices or converted in action.choices):
                return converted
    key = action.option_strings[-1].removeprefix("--") if action.nargs != 0 else action.dest.replace("_", "-")
    raise ImgclfError(_bad_value(path, key, value, expected))


def _bad_value(path: str, key: str, value: object, expected: str) -> str:
    return f"Config file {path} has a bad value for {key}. Received: {key} = {value!r}. Use {expected}."


def _kind(convert: object) -> str:
    return {int: "a whole number", float: "a number"}.get(convert, "a string")


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
