"""The predictor that `imgclf.load` returns: a trained run on an inference engine, and its `Prediction`s."""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from imgclf.config import ImgclfError, RunConfig
from imgclf.data.folders import list_images
from imgclf.data.images import ImageError, image_tensor, load_tensor
from imgclf.deploy.engines import TorchEngine, installed_engines, pick_engine
from imgclf.deploy.export import ExportError, export_onnx, load_engine
from imgclf.deploy.notebook import run_html, run_summary
from imgclf.devices import CPU, resolve_device
from imgclf.runs import (
    CALIBRATION_FILE,
    THRESHOLDS_FILE,
    UNSURE,
    WEIGHTS_FILE,
    RunError,
    load_model,
    read_config,
    read_history,
    read_temperature,
    read_thresholds,
)

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """One image's prediction: the label, its class index, its probability, and every class's probability.

    Below the run's `min_confidence` the label is `unsure` and the index None (`probability` is still the top
    class's). `error` is set (and the rest empty) when the image could not be read.

    A multi-label run's prediction has `labels`: every class whose probability (its own sigmoid) reaches the
    class's threshold, most probable first, maybe none; `label` is them joined by `;` and `index` None.
    """

    file: str
    label: str | None
    index: int | None
    probability: float | None
    probabilities: dict[str, float]
    error: str | None = None
    labels: list[str] | None = None


ImageInput = str | os.PathLike | Image.Image | np.ndarray
"""An image to predict: a file's path, a PIL image, or an H×W×3 uint8 array (RGB)."""


class InputError(ImgclfError, TypeError):
    """A value passed to the Python API is of a type or shape it does not take."""


def _is_one_image(images: object) -> bool:
    if isinstance(images, Image.Image | np.ndarray):
        return True
    return isinstance(images, str | os.PathLike) and not Path(images).is_dir()


def expand_images(images: object) -> list[str | Image.Image | np.ndarray]:
    """The images to predict, in order: files, each folder's images (recursively, sorted), PIL images and arrays.

    Raises `InputError` for anything else, and `DatasetError` for a folder without images.
    """
    if isinstance(images, str | os.PathLike | Image.Image | np.ndarray):
        images = [images]
    if not isinstance(images, Sequence | Iterator):
        raise InputError(_wrong_input(images))
    expanded: list[str | Image.Image | np.ndarray] = []
    for item in images:
        if isinstance(item, str | os.PathLike):
            path = Path(item)
            expanded.extend(list_images([path]) if path.is_dir() else [str(path)])
        elif isinstance(item, Image.Image):
            expanded.append(item)
        elif isinstance(item, np.ndarray):
            expanded.append(_check_array(item))
        else:
            raise InputError(_wrong_input(item))
    return expanded


def _wrong_input(item: object) -> str:
    shown = repr(item) if len(repr(item)) <= 60 else repr(item)[:57] + "..."
    return (
        f"Cannot predict a {type(item).__name__}. Received: images={shown}. Give an image file or folder (str or "
        "Path), a PIL image, an H×W×3 uint8 numpy array, or a list of them."
    )


def _check_array(array: np.ndarray) -> np.ndarray:
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise InputError(
            f"A numpy image must be H×W×3 uint8 (RGB). Received: an array of shape {array.shape} and dtype "
            f"{array.dtype}. Convert it, e.g. np.asarray(pil_image.convert('RGB'))."
        )
    return array


def _input_name(item: str | Image.Image | np.ndarray) -> str:
    if isinstance(item, Image.Image):
        return "<PIL image>"
    return "<array>" if isinstance(item, np.ndarray) else str(item)


def _check_batch_size(batch_size: object) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"Invalid batch size. Received: batch_size={batch_size!r}. Give a whole number of 1 or more.")


def _probabilities(engine, images: torch.Tensor, tta: bool) -> torch.Tensor:
    probabilities = engine(images)
    if tta:
        probabilities = (probabilities + engine(images.flip(-1))) / 2
    return torch.from_numpy(probabilities)


class Run:
    """A trained run loaded from its directory, ready to predict.

    `engine` computes the probabilities (PyTorch unless `load` was given another engine); `model` is the
    PyTorch model, loaded on first use when another engine predicts. `temperature` (fitted on the validation
    set when training ended) calibrates the probabilities; an image whose top probability is below
    `min_confidence` (the run's `--min-confidence`, None for never) is labelled `unsure`.

    >>> run = imgclf.load("runs/seed-cnn-20261125-101500")
    >>> run.predict("plane.jpg").label
    'planes'
    """

    def __init__(
        self,
        run_dir: str | Path,
        config: RunConfig,
        model: torch.nn.Module | None = None,
        engine=None,
        device: torch.device = CPU,
    ):
        self.run_dir = Path(run_dir)
        self.config = config
        self.temperature = read_temperature(run_dir)
        self.min_confidence = config.train.min_confidence
        self.thresholds = read_thresholds(run_dir, config.class_names) if config.train.multi_label else None
        self._model = None if model is None else model.eval()
        if engine is None:
            engine = TorchEngine(self.model, config.preprocessing, self.temperature, device, config.train.multi_label)
        self.engine = engine

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._model = load_model(self.run_dir, self.config).eval()
        return self._model

    @property
    def history(self) -> list[dict[str, float]]:
        """The per-epoch records of `history.csv` (epoch, loss, accuracy, val_loss, val_accuracy, seconds)."""
        return read_history(self.run_dir)

    @property
    def metrics(self) -> dict:
        """The scores on the validation images when training ended (`metrics.json`; empty when there is none)."""
        path = self.run_dir / "metrics.json"
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, RecursionError) as error:
            raise RunError(
                f"{path} is not valid JSON ({error}); `imgclf report {self.run_dir}` writes it again."
            ) from None

    @property
    def class_names(self) -> list[str]:
        """The class names, in the order of the model's outputs."""
        return self.config.class_names

    @property
    def preprocessing(self):
        """The `Preprocessing` (input size, mean, std, interpolation, resize mode) every input goes through."""
        return self.config.preprocessing

    def __repr__(self) -> str:
        return run_summary(self)

    def _repr_html_(self) -> str:
        return run_html(self)

    def export(self, out_dir: str | os.PathLike | None = None, images: Sequence[str | os.PathLike] | None = None):
        """Export to ONNX in `out_dir` (default: the run directory) after checking parity: see `imgclf export`.

        Returns an `ExportResult` (the ONNX file, `export.json`, the parity check).
        """
        return export_onnx(self, out_dir, images)

    def _decode(self, item: str | Image.Image | np.ndarray) -> torch.Tensor | ImageError:
        prep = self.preprocessing
        try:
            if isinstance(item, np.ndarray):
                item = Image.fromarray(item, "RGB")
            if isinstance(item, Image.Image):
                return image_tensor(item, prep)
            return load_tensor(item, prep)
        except ImageError as error:
            return error

    def predict_tensors(self, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
        """Class probabilities (N, classes) for a uint8 batch (N, 3, S, S) at the model's input size.

        `tta` averages them with those of the horizontally flipped images.
        """
        return _probabilities(self.engine, images, tta)

    def predict(
        self, images: ImageInput | Sequence[ImageInput], batch_size: int = 32, tta: bool = False
    ) -> Prediction | list[Prediction]:
        """Predict one image → `Prediction`; a folder (its images, recursively, sorted) or a list → list of them.

        An image is a file path (str or Path), a PIL image or an H×W×3 uint8 numpy array; a list may mix them
        with folders. A single unreadable image raises `ImageError`; in a list it gets a `Prediction` with `error`
        set. `tta` averages with the horizontally flipped image.

        >>> run.predict("photos/plane.jpg").label
        'planes'
        >>> [p.label for p in run.predict(["car.jpg", np.asarray(pil_image), "more_photos/"])]
        """
        if _is_one_image(images):
            prediction = self.predict([images], batch_size, tta)[0]
            if prediction.error is not None:
                raise ImageError(prediction.file, prediction.error)
            return prediction
        return list(self.predict_iter(images, batch_size, tta))

    def predict_iter(
        self, images: ImageInput | Sequence[ImageInput], batch_size: int = 32, tta: bool = False
    ) -> Iterator[Prediction]:
        """`predict` one batch at a time, in order (inputs as `predict` takes them).

        Each core decodes and predicts a batch of its own, a few batches ahead of the caller, with the engine's
        `per_core` form (one thread a call). When decoding and the model took turns with every core, the model's
        threads spun at each layer waiting for a partner the busy system had not scheduled (seed-cnn on PyTorch:
        4.5 ms of CPU an image against 0.9 ms; `bench/predict_scale.py`).
        """
        _check_batch_size(batch_size)
        images = expand_images(images)
        workers, engine, threads = os.cpu_count() or 1, self.engine.per_core, torch.get_num_threads()
        try:
            # Batches are sliced as they are reached: a million files are held once, as the list of their names.
            with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
                batches = (
                    pool.submit(self._predict_batch, images[start : start + batch_size], tta, engine)
                    for start in range(0, len(images), batch_size)
                )
                pending = deque(itertools.islice(batches, workers + 1))
                while pending:
                    predictions = pending.popleft().result()
                    pending.extend(itertools.islice(batches, 1))
                    yield from predictions
        finally:
            torch.set_num_threads(threads)  # a worker's one thread became the default of every thread started later

    def _predict_batch(self, items: Sequence[ImageInput], tta: bool, engine) -> list[Prediction]:
        decoded = [self._decode(item) for item in items]
        good = [i for i, result in enumerate(decoded) if isinstance(result, torch.Tensor)]
        probabilities = _probabilities(engine, torch.stack([decoded[i] for i in good]), tta) if good else None
        rows = {i: probabilities[row] for row, i in enumerate(good)}
        predictions = []
        for i, item in enumerate(items):
            name = _input_name(item)
            if i not in rows:
                predictions.append(Prediction(name, None, None, None, {}, error=decoded[i].reason))
                continue
            predictions.append(self.prediction_from(rows[i], name))
        return predictions

    def prediction_from(self, probabilities: torch.Tensor, file: str = "") -> Prediction:
        """The `Prediction` for one image's class probabilities, `unsure` below the run's `min_confidence`."""
        if self.thresholds is not None:
            return self._labels_from(probabilities, file)
        index = int(probabilities.argmax())
        values = probabilities.tolist()  # in one call: element by element took twice the time (11 against 6 µs)
        probability = values[index]
        unsure = self.min_confidence is not None and probability < self.min_confidence
        return Prediction(
            file=file,
            label=UNSURE if unsure else self.class_names[index],
            index=None if unsure else index,
            probability=probability,
            probabilities=dict(zip(self.class_names, values)),
        )

    def check_single_label(self, what: str) -> None:
        """Raise `RunError` when the run is multi-label, which `what` (a command or feature) does not handle yet."""
        if self.thresholds is not None:
            raise RunError(
                f"{self.run_dir} is a multi-label run, which {what} does not handle yet. Received: a run with "
                f"{THRESHOLDS_FILE}. Use imgclf predict, or imgclf evaluate RUN --labels CSV."
            )

    def _labels_from(self, probabilities: torch.Tensor, file: str) -> Prediction:
        """A multi-label run's `Prediction`: the classes at or above their thresholds, most probable first."""
        order = sorted(range(len(self.class_names)), key=lambda c: -float(probabilities[c]))
        labels = [self.class_names[c] for c in order if float(probabilities[c]) >= self.thresholds[c]]
        return Prediction(
            file=file,
            label=";".join(labels),
            index=None,
            probability=float(probabilities[order[0]]),
            probabilities={c: float(p) for c, p in zip(self.class_names, probabilities)},
            labels=labels,
        )


def load(run_dir: str | Path, weights: str = WEIGHTS_FILE, engine: str = "torch", device: str = "cpu") -> Run:
    """Load a run directory (its `config.json` and `model.safetensors`) for prediction.

    `engine`: `torch`, `onnx` (onnxruntime), `openvino`, or `auto` for the fastest installed. The ONNX engines
    use the run's `imgclf export` (or export into the cache once) and are checked against PyTorch on load.
    `device` (`cpu`, `cuda`, `cuda:N` or `auto`) is where the PyTorch engine runs; on a GPU `auto` is PyTorch.
    A run without `calibration.json` (its training stopped before the end) predicts uncalibrated, with a warning.
    """
    config = read_config(run_dir)
    if not (Path(run_dir) / CALIBRATION_FILE).is_file():
        log.warning(
            "%s has no %s, so its probabilities are not calibrated. Finish its training with "
            "`imgclf train --resume %s`, or fit the temperature on its validation images with `imgclf report %s`.",
            run_dir,
            CALIBRATION_FILE,
            run_dir,
            run_dir,
        )
    torch_device = resolve_device(device)
    name = pick_engine(engine, torch_device)
    if name == "torch":
        return Run(run_dir, config, load_model(run_dir, config, weights), device=torch_device)
    if weights != WEIGHTS_FILE:
        raise RunError(f"Engine {name} runs the exported {WEIGHTS_FILE}; use --engine torch for {weights}.")
    # `auto` goes down the installed engines, fastest first, to the first that answers as PyTorch does.
    installed = installed_engines()
    for candidate in installed[installed.index(name) :] if engine == "auto" else [name]:
        if candidate == "torch":
            break
        try:
            return Run(run_dir, config, engine=load_engine(candidate, run_dir, config))
        except ExportError as error:
            if engine != "auto":
                raise
            log.warning("Not predicting with %s: %s", candidate, error)
    log.warning("Predicting with PyTorch.")
    return Run(run_dir, config, load_model(run_dir, config, weights))
