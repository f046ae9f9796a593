"""`imgclf train`'s options: DATA and the run's own, then data, model and optimiser, augmentation.

A `--config FILE.toml` may set any of them (`config_file.py`), so the functions here return the options they add.
"""

from __future__ import annotations

import argparse
import dataclasses

from imgclf.config import (
    AUGMENT_PRESETS,
    CLASS_WEIGHTS,
    DEVICES,
    FILL_MODES,
    HEADS,
    OPTIMIZERS,
    PRECISIONS,
    PRESETS,
    TRACKERS,
)

AUGMENT_OPTIONS = [f.name for f in dataclasses.fields(AUGMENT_PRESETS["none"])]


def add_train_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Add `imgclf train`'s arguments to its `parser`; returns them."""
    own = [
        parser.add_argument("data", nargs="?", metavar="DATA", help="folder with one sub-folder per class"),
        parser.add_argument("--out", metavar="DIR", help="run directory (default runs/<model>-<timestamp>)"),
        parser.add_argument("--resume", metavar="RUN", help="continue RUN from its last saved epoch"),
        parser.add_argument("--config", metavar="FILE.toml", help="options file; command-line options win"),
        parser.add_argument(
            "--nproc",
            type=int,
            metavar="N",
            help="train in N processes on this machine (DistributedDataParallel through torchrun; --batch-size "
            "stays the global batch and must divide by N; default 1)",
        ),
        parser.add_argument(
            "--preset",
            choices=PRESETS,
            help="fast: a frozen EfficientNet-Lite0 head (default); balanced: the better of Lite0 and Lite1, or both, "
            "with flip test-time augmentation where it helps; best: the same among Lite0, Lite1 and Lite2",
        ),
        parser.add_argument(
            "--time-limit",
            metavar="DURATION",
            help="stop within DURATION (90s, 10m, 1h; the final report comes after), keeping the best model so far",
        ),
        parser.add_argument(
            "--track",
            choices=TRACKERS,
            help="mlflow: log the options, every epoch, the plots, report and model to MLflow "
            "($MLFLOW_TRACKING_URI; default none; needs pip install 'imgclf[mlflow]')",
        ),
    ]
    return own + _add_data_options(parser) + _add_model_options(parser) + _add_augment_options(parser)


def _add_data_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    data = parser.add_argument_group("data")
    return [
        data.add_argument("--val", metavar="DIR", help="validation folder with the same class sub-folders"),
        data.add_argument(
            "--labels",
            metavar="CSV",
            help="train on a CSV's file,label rows instead of DATA's class sub-folders (optional split column: "
            "train, val, test)",
        ),
        data.add_argument(
            "--images", metavar="DIR", help="the folder the --labels paths are relative to (default: the CSV's)"
        ),
        data.add_argument(
            "--multi-label",
            action="store_true",
            default=None,
            help="each image has a set of labels (one sigmoid per label, thresholds tuned for F1); implied by a "
            'label cell such as "shirt;hat"',
        ),
        data.add_argument(
            "--val-split",
            type=float,
            metavar="F",
            help="hold out a stratified, seeded fraction of DATA instead of --val (default 0.2)",
        ),
        data.add_argument(
            "--strict",
            action="store_true",
            default=None,
            help="fail before training if any image is unreadable (default: skip and list it)",
        ),
        data.add_argument(
            "--cache-mem",
            type=int,
            metavar="MB",
            dest="cache_mem_mb",
            help="decode into memory when the images fit in MB, else stream from disk (default 2048)",
        ),
        data.add_argument(
            "--no-decode-cache",
            dest="decode_cache",
            action="store_false",
            default=None,
            help="decode every image on every run instead of keeping the decoded, resized pixels on disk "
            "($IMGCLF_CACHE/decoded, default ~/.cache/imgclf/decoded)",
        ),
        data.add_argument("--workers", type=int, help="decoding threads / DataLoader workers (default 2)"),
        data.add_argument(
            "--resize",
            metavar="{squash,crop,pad}",
            help="how a photo becomes the square input: squash it whole (default, as Keras), keep its centre "
            "square (crop), or keep it whole on --pad-color bars (pad)",
        ),
        data.add_argument(
            "--pad-color",
            metavar="R,G,B",
            help="the colour of pad's bars, 0-255 each (default 0,0,0: black; ImageNet's mean grey is 124,116,104)",
        ),
    ]


def _add_model_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    model = parser.add_argument_group("model and optimiser")
    return [
        model.add_argument(
            "--model",
            help="a registered model (`imgclf summary --list`), timm:<name> or torchvision:<name> "
            "(default efficientnet_lite0, whose ImageNet weights install with imgclf)",
        ),
        model.add_argument("--image-size", type=int, metavar="PX", help="input size (default: the model's)"),
        model.add_argument("--head", choices=HEADS, help="head on a backbone (default linear; seed-vgg16: seed)"),
        model.add_argument(
            "--weights", metavar="FILE", help="backbone weights from a local file (safetensors or .pth)"
        ),
        model.add_argument("--fine-tune", metavar="N|all", help="after the head, unfreeze the last N backbone blocks"),
        model.add_argument("--fine-tune-epochs", type=int, metavar="N", help="epochs of fine-tuning (default 5)"),
        model.add_argument(
            "--fine-tune-lr", type=float, metavar="LR", help="fine-tuning learning rate (default lr/10)"
        ),
        model.add_argument(
            "--no-feature-cache",
            dest="feature_cache",
            action="store_false",
            default=None,
            help="recompute a frozen backbone's features instead of caching them on disk",
        ),
        model.add_argument("--optimizer", choices=OPTIMIZERS, help="default adam"),
        model.add_argument("--lr", type=float, help="learning rate (default 1e-3)"),
        model.add_argument("--epochs", type=int, help="default 30"),
        model.add_argument("--batch-size", type=int, help="default 32"),
        model.add_argument(
            "--steps-per-epoch",
            type=int,
            metavar="N",
            help="batches per epoch (default: one pass over DATA; the tutorial uses 30)",
        ),
        model.add_argument("--seed", type=int, help="makes split, initialisation, augmentation and order repeatable"),
        model.add_argument("--patience", type=int, metavar="EPOCHS", help="stop when val_loss stalls this long"),
        model.add_argument("--class-weight", choices=CLASS_WEIGHTS, help="auto: inverse class frequency in the loss"),
        model.add_argument(
            "--min-confidence",
            type=float,
            metavar="P",
            help="the run labels an image `unsure` when its top probability is below P (default: never)",
        ),
        model.add_argument(
            "--precision",
            choices=PRECISIONS,
            help="auto: bf16 where the hardware is fast at it, fp16 on a GPU without bf16; fp16 needs CUDA",
        ),
        model.add_argument("--device", choices=DEVICES, help="auto: CUDA when present"),
    ]


def _add_augment_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    augment = parser.add_argument_group("augmentation (a preset, then any single setting)")
    return [
        augment.add_argument(
            "--augment",
            choices=sorted(AUGMENT_PRESETS),
            help="seed: the tutorial's shear 0.2°, zoom 0.2, flip; default: mild geometry and colour; none "
            "(default: none)",
        ),
        augment.add_argument("--rotation", type=float, metavar="DEG"),
        augment.add_argument("--width-shift", type=float, metavar="F"),
        augment.add_argument("--height-shift", type=float, metavar="F"),
        augment.add_argument("--shear", type=float, metavar="DEG", help="shear angle in degrees (as Keras)"),
        augment.add_argument("--zoom", type=float, metavar="F", help="zoom drawn per axis in [1-F, 1+F]"),
        augment.add_argument("--horizontal-flip", action=argparse.BooleanOptionalAction),
        augment.add_argument("--vertical-flip", action=argparse.BooleanOptionalAction),
        augment.add_argument("--brightness", type=float, metavar="F"),
        augment.add_argument("--contrast", type=float, metavar="F"),
        augment.add_argument("--saturation", type=float, metavar="F"),
        augment.add_argument("--fill-mode", choices=FILL_MODES),
    ]
