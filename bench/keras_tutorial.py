"""Run one of the Keras tutorial's car-vs-plane experiments the way the tutorial does, and print one JSON line.

Runs in its own TensorFlow venv, never in imgclf's; `bench/keras_compare.py` builds that venv and calls this:

    .venv-keras/bin/python bench/keras_tutorial.py --experiment cnn
    .venv-keras/bin/python bench/keras_tutorial.py --experiment vgg16 --epochs 3 --seed 1
    .venv-keras/bin/python bench/keras_tutorial.py --experiment vgg16 --vgg-weights vgg16_notop.h5

"cnn" is the tutorial's two-block CNN trained with Adam; "vgg16" is a frozen VGG16 base with a dense head trained
with RMSprop(1e-4). Both read the JPEG files through `ImageDataGenerator.flow_from_directory` every epoch, with
the tutorial's augmentation, and train `--epochs` × `--steps-per-epoch` batches of `--batch-size` images.
VGG16 starts from ImageNet weights only when they are already on disk (the Keras cache, or `--vgg-weights`):
offline there is no download, so it falls back to random weights, which time the same work but give
meaningless accuracies ("weights": "random" in the output).

Keras's own logs go to stderr; stdout gets one JSON line at the end. Seconds per epoch include the validation
pass; the mean leaves out the first epoch, which also traces the graph. Peak RSS is this process's
high-water mark. The seed fixes the data order and the augmentation, but TensorFlow's multithreaded CPU kernels
sum in varying order, so from the second epoch on the numbers drift from run to run; TF_DETERMINISTIC_OPS=1 in
the environment makes runs repeat exactly (it stays off here, to time what the tutorial runs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf

# The tutorial is Keras 2 code. TensorFlow 2.16+ ships Keras 3 as tf.keras, which no longer has
# ImageDataGenerator; tf_keras is Keras 2 kept up to date with TensorFlow. Importing it by name, rather than
# setting TF_USE_LEGACY_KERAS=1 before tensorflow is imported, makes the dependency explicit and fails at once
# when it is missing.
import tf_keras as keras
from common import add_data_option
from tf_keras.preprocessing.image import ImageDataGenerator

IMAGE_SIZE = (64, 64)
VGG16_NOTOP_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
RANDOM_WEIGHTS_NOTE = "random weights: timing only, accuracy not comparable"
AUGMENTATION = {
    "cnn": {"shear_range": 0.2, "zoom_range": 0.2, "horizontal_flip": True},
    "vgg16": {
        "rotation_range": 40,
        "width_shift_range": 0.2,
        "height_shift_range": 0.2,
        "shear_range": 0.2,
        "zoom_range": 0.2,
        "horizontal_flip": True,
        "fill_mode": "nearest",
    },
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", choices=sorted(AUGMENTATION), required=True)
    add_data_option(parser)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--steps-per-epoch", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vgg-weights", type=Path, help=f"VGG16 ImageNet weights ({VGG16_NOTOP_FILE})")
    args = parser.parse_args()
    for split in ("training_set", "val_set"):
        if not (args.data / split).is_dir():
            parser.error(f"--data {args.data} has no {split}/ folder; give the folder that holds both splits")
    if args.vgg_weights is not None and not args.vgg_weights.is_file():
        parser.error(f"--vgg-weights {args.vgg_weights} is not a file; give Keras's {VGG16_NOTOP_FILE}")
    return args


def build_cnn() -> keras.Model:
    """The tutorial's first model: two conv/max-pool blocks and a 128-unit dense layer, compiled with Adam."""
    model = keras.Sequential(
        [
            keras.layers.Conv2D(32, (3, 3), activation="relu", input_shape=(*IMAGE_SIZE, 3)),
            keras.layers.MaxPooling2D(pool_size=(2, 2)),
            keras.layers.Conv2D(32, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D(pool_size=(2, 2)),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def build_vgg16(weights: str | None) -> keras.Model:
    """The tutorial's second model: a frozen VGG16 base under a dropout and dense head, compiled with RMSprop.

    Args:
        weights: "imagenet", the path of a weights file, or None for random weights.
    """
    base = keras.applications.VGG16(weights=weights, include_top=False, input_shape=(*IMAGE_SIZE, 3))
    base.trainable = False
    model = keras.Sequential(
        [
            base,
            keras.layers.Flatten(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.RMSprop(learning_rate=1e-4), loss="binary_crossentropy", metrics=["accuracy"]
    )
    return model


def vgg16_weights(path: Path | None) -> str | None:
    """VGG16's `weights` argument: `path` if given, "imagenet" if Keras has the file cached, else None (random)."""
    if path is not None:
        return str(path)
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    return "imagenet" if (keras_home / "models" / VGG16_NOTOP_FILE).is_file() else None


class EpochTimer(keras.callbacks.Callback):
    """Records the wall seconds of every epoch, its validation pass included."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._started)


def count_params(weights: list[tf.Variable]) -> int:
    """The number of values in `weights`."""
    return sum(int(np.prod(weight.shape)) for weight in weights)


def endless(batches: keras.preprocessing.image.DirectoryIterator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield `batches` forever, reshuffled after each pass, as the tutorial's Keras 2.0 `fit_generator` did.

    tf_keras's `fit` treats a DirectoryIterator as a finite Sequence: with 160 images it stops after 5 batches
    ("Your input ran out of data") instead of running `steps_per_epoch` batches per epoch.
    """
    while True:
        yield next(batches)


def run(args: argparse.Namespace) -> dict:
    """Train the experiment as the tutorial does and return its timings, accuracies and setup."""
    keras.utils.set_random_seed(args.seed)
    train_batches = ImageDataGenerator(rescale=1.0 / 255, **AUGMENTATION[args.experiment]).flow_from_directory(
        args.data / "training_set",
        target_size=IMAGE_SIZE,
        batch_size=args.batch_size,
        class_mode="binary",
        seed=args.seed,
    )
    # In order, so that validation_steps = ceil(images / batch size) sees every image exactly once.
    val_batches = ImageDataGenerator(rescale=1.0 / 255).flow_from_directory(
        args.data / "val_set", target_size=IMAGE_SIZE, batch_size=args.batch_size, class_mode="binary", shuffle=False
    )
    weights = None
    if args.experiment == "cnn":
        model = build_cnn()
    else:
        vgg_weights = vgg16_weights(args.vgg_weights)
        weights = "random" if vgg_weights is None else "imagenet"
        if vgg_weights is None:
            print(f"VGG16 ImageNet weights not found; {RANDOM_WEIGHTS_NOTE}", file=sys.stderr)
        model = build_vgg16(vgg_weights)
    model.summary()
    timer = EpochTimer()
    history = model.fit(
        endless(train_batches),
        steps_per_epoch=args.steps_per_epoch,
        epochs=args.epochs,
        validation_data=val_batches,
        validation_steps=len(val_batches),
        callbacks=[timer],
        verbose=2,
    )
    val_accuracy = history.history["val_accuracy"]
    result = {
        "experiment": args.experiment,
        "tensorflow": tf.__version__,
        "keras": f"tf_keras {keras.__version__}",
        "threads": {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),  # 0: TensorFlow's default
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
            "cpus": len(os.sched_getaffinity(0)),
        },
        "epochs": args.epochs,
        "steps_per_epoch": args.steps_per_epoch,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "weights": weights,
        "trainable_params": count_params(model.trainable_weights),
        "non_trainable_params": count_params(model.non_trainable_weights),
        "epoch_seconds": timer.seconds,
        "mean_epoch_seconds": statistics.mean(timer.seconds[1:] or timer.seconds),
        "final_val_accuracy": val_accuracy[-1],
        "best_val_accuracy": max(val_accuracy),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if weights == "random":
        result["note"] = RANDOM_WEIGHTS_NOTE
    return result


def main() -> None:
    args = parse_args()
    # flow_from_directory, summary() and fit() print to stdout; keep stdout for the JSON line alone.
    with contextlib.redirect_stdout(sys.stderr):
        result = run(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
