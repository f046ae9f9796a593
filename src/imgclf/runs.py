"""The run directory: atomic writes, safetensors weights, and `load(run_dir)` for prediction.

A run directory holds `config.json`, `model.safetensors` (the best weights), `history.csv`, `loss.png`,
`accuracy.png`, `summary.txt`, `skipped.csv` when files were skipped, and `checkpoint/` for `--resume`.
Loading reads only JSON and safetensors: nothing is ever unpickled.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import signal
import tempfile
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save

from imgclf.config import ImgclfError, RunConfig
from imgclf.devices import CPU, resolve_device
from imgclf.engines import TorchEngine, installed_engines, pick_engine
from imgclf.images import ImageError, decode_image, image_to_tensor, load_tensor
from imgclf.models import BuildOptions, create_model

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CALIBRATION_FILE = "calibration.json"
UNSURE = "unsure"
CHECKPOINT_DIR = "checkpoint"
log = logging.getLogger(__name__)
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")


class RunError(ImgclfError):
    """A run directory is missing, incomplete, or holds files imgclf refuses to load."""


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def cache_dir(name: str) -> Path:
    """imgclf's cache folder `name`: under `$IMGCLF_CACHE` if set, else `~/.cache/imgclf`."""
    return Path(os.environ.get("IMGCLF_CACHE") or Path.home() / ".cache" / "imgclf") / name


def atomic_write_bytes(path: str | Path, data: bytes, durable: bool = True) -> None:
    """Write `data` to `path` through a temporary file and a rename, so readers never see half a file.

    `durable` also waits for the disk (fsync) before the rename; a cache, cheap to recompute, can skip that.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the permissions a plain open() would
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            if durable:
                os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block ends, then deliver it: the files written inside stay a matching set.

    Where Python cannot catch SIGINT (outside the main thread, or when another program owns its handler) the
    block runs unguarded.
    """
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield
        return
    held: list[int] = []
    signal.signal(signal.SIGINT, lambda number, frame: held.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        signal.raise_signal(signal.SIGINT)


def atomic_write_text(path: str | Path, text: str) -> None:
    """`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, values: object, nan_as_null: bool = True) -> None:
    """Write `values` as indented JSON, atomically.

    NaN and infinities become `null`, so that every JSON reader can read the file (they are not JSON); with
    `nan_as_null=False` they are written as Python's `json` writes and reads them back.
    """
    if nan_as_null:
        values = _finite_or_none(values)
    atomic_write_text(path, json.dumps(values, indent=2, allow_nan=not nan_as_null) + "\n")


def _finite_or_none(value: object) -> object:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    return value


def write_csv(path: str | Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Write a CSV file with `header`, atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def save_figure(path: str | Path, figure) -> None:
    """Render a matplotlib figure to PNG, atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def save_tensors(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None, durable: bool = True
) -> None:
    """Save tensors as safetensors, atomically (`durable`: see `atomic_write_bytes`)."""
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    atomic_write_bytes(path, save(tensors, metadata=metadata), durable)


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file; raises `RunError` when it is missing or not safetensors."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path} is missing; the run directory is incomplete.")
    try:
        return load_file(path)
    except Exception as error:  # safetensors raises its own error types for any malformed header
        raise RunError(f"{path} is not a valid safetensors file ({error}).") from None


def read_config(run_dir: str | Path) -> RunConfig:
    """Read a run's `config.json`, refusing directories that only hold pickled weights."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"Run directory {run_dir} does not exist. Give a folder made by `imgclf train`.")
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        pickles = sorted(p.name for p in run_dir.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        hint = (
            f" It holds pickled files {pickles}, which imgclf never loads (unpickling can run code)." if pickles else ""
        )
        raise RunError(f"{run_dir} is not an imgclf run: {CONFIG_FILE} is missing.{hint}")
    try:
        return RunConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as error:
        raise RunError(f"{config_path} is not a valid imgclf run configuration ({error!r}).") from None


@dataclass
class Prediction:
    """One image's prediction: the label, its class index, its probability, and every class's probability.

    Below the run's `min_confidence` the label is `unsure` and the index None (`probability` is still the top
    class's). `error` is set (and the rest empty) when the image could not be read.
    """

    file: str
    label: str | None
    index: int | None
    probability: float | None
    probabilities: dict[str, float]
    error: str | None = None


ImageInput = str | Path | Image.Image


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
        self._model = None if model is None else model.eval()
        if engine is None:
            engine = TorchEngine(self.model, config.preprocessing, self.temperature, device)
        self.engine = engine

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._model = load_model(self.run_dir, self.config).eval()
        return self._model

    @property
    def history(self) -> list[dict[str, float]]:
        """The per-epoch records of `history.csv` (epoch, loss, accuracy, val_loss, val_accuracy, seconds)."""
        path = self.run_dir / "history.csv"
        if not path.is_file():
            return []
        with path.open(newline="") as file:
            return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(file)]

    @property
    def class_names(self) -> list[str]:
        return self.config.class_names

    @property
    def preprocessing(self):
        return self.config.preprocessing

    def _decode(self, item: ImageInput) -> torch.Tensor | ImageError:
        prep = self.preprocessing
        try:
            if isinstance(item, Image.Image):
                return image_to_tensor(decode_image(item, prep.image_size, prep.interpolation))
            return load_tensor(item, prep)
        except ImageError as error:
            return error

    def predict_tensors(self, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
        """Class probabilities (N, classes) for a uint8 batch (N, 3, S, S) at the model's input size.

        `tta` averages them with those of the horizontally flipped images.
        """
        probabilities = self.engine(images)
        if tta:
            probabilities = (probabilities + self.engine(images.flip(-1))) / 2
        return torch.from_numpy(probabilities)

    def predict(self, images: ImageInput | Sequence[ImageInput], batch_size: int = 32, tta: bool = False):
        """Predict one image (path or PIL image) → `Prediction`, or a list of them → list of `Prediction`.

        A single unreadable image raises `ImageError`; in a list it gets a `Prediction` with `error` set.
        """
        if isinstance(images, str | Path | Image.Image):
            prediction = self.predict([images], batch_size, tta)[0]
            if prediction.error is not None:
                raise ImageError(prediction.file, prediction.error)
            return prediction
        return list(self.predict_iter(images, batch_size, tta))

    def predict_iter(
        self, images: Sequence[ImageInput], batch_size: int = 32, tta: bool = False
    ) -> Iterator[Prediction]:
        """`predict` one batch at a time, in order.

        Decoding and the engine take turns, each with every core (side by side on 2 cores they slowed each other:
        Lite0 on OpenVINO 190–215 against 172–198 img/s); the next batch decodes while the caller handles this one.
        """
        batches = [images[start : start + batch_size] for start in range(0, len(images), batch_size)]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            pending = [pool.submit(self._decode, item) for item in batches[0]] if batches else []
            for number, batch in enumerate(batches):
                decoded = [future.result() for future in pending]
                predictions = self._predictions(batch, decoded, tta)
                following = batches[number + 1] if number + 1 < len(batches) else []
                pending = [pool.submit(self._decode, item) for item in following]
                yield from predictions

    def _predictions(
        self, items: Sequence[ImageInput], decoded: list[torch.Tensor | ImageError], tta: bool
    ) -> list[Prediction]:
        good = [i for i, result in enumerate(decoded) if isinstance(result, torch.Tensor)]
        probabilities = self.predict_tensors(torch.stack([decoded[i] for i in good]), tta) if good else None
        rows = {i: probabilities[row] for row, i in enumerate(good)}
        predictions = []
        for i, item in enumerate(items):
            name = "<PIL image>" if isinstance(item, Image.Image) else str(item)
            if i not in rows:
                predictions.append(Prediction(name, None, None, None, {}, error=decoded[i].reason))
                continue
            predictions.append(self.prediction_from(rows[i], name))
        return predictions

    def prediction_from(self, probabilities: torch.Tensor, file: str = "") -> Prediction:
        """The `Prediction` for one image's class probabilities, `unsure` below the run's `min_confidence`."""
        index = int(probabilities.argmax())
        probability = float(probabilities[index])
        unsure = self.min_confidence is not None and probability < self.min_confidence
        return Prediction(
            file=file,
            label=UNSURE if unsure else self.class_names[index],
            index=None if unsure else index,
            probability=probability,
            probabilities={c: float(p) for c, p in zip(self.class_names, probabilities)},
        )


def build_model(config: RunConfig) -> torch.nn.Module:
    """A freshly initialised model of the run's architecture."""
    options = BuildOptions(pretrained=False, head=config.train.head)
    return create_model(config.train.model, len(config.class_names), config.preprocessing.image_size, options)


def read_temperature(run_dir: str | Path) -> float:
    """The run's calibration temperature from `calibration.json` (1.0, no change, when there is none)."""
    path = Path(run_dir) / CALIBRATION_FILE
    if not path.is_file():
        return 1.0
    try:
        temperature = float(json.loads(path.read_text(encoding="utf-8"))["temperature"])
    except (ValueError, KeyError, TypeError) as error:
        raise RunError(
            f"{path} is not a valid calibration file ({error!r}). Delete it to predict uncalibrated."
        ) from None
    if not temperature > 0:
        raise RunError(f"{path} holds temperature {temperature}; it must be positive. Delete it or retrain.")
    return temperature


def load_model(run_dir: str | Path, config: RunConfig, weights: str = WEIGHTS_FILE) -> torch.nn.Module:
    """The run's PyTorch model with its trained weights."""
    model = build_model(config)
    state = load_tensors(Path(run_dir) / weights)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise RunError(f"{Path(run_dir) / weights} does not match the model in {CONFIG_FILE}: {error}") from None
    return model


def load(run_dir: str | Path, weights: str = WEIGHTS_FILE, engine: str = "torch", device: str = "cpu") -> Run:
    """Load a run directory (its `config.json` and `model.safetensors`) for prediction.

    `engine`: `torch`, `onnx` (onnxruntime), `openvino`, or `auto` for the fastest installed. The ONNX engines
    use the run's `imgclf export` (or export into the cache once) and are checked against PyTorch on load.
    `device` (`cpu`, `cuda`, `cuda:N` or `auto`) is where the PyTorch engine runs; on a GPU `auto` is PyTorch.
    """
    config = read_config(run_dir)
    torch_device = resolve_device(device)
    name = pick_engine(engine, torch_device)
    if name == "torch":
        return Run(run_dir, config, load_model(run_dir, config, weights), device=torch_device)
    if weights != WEIGHTS_FILE:
        raise RunError(f"Engine {name} runs the exported {WEIGHTS_FILE}; use --engine torch for {weights}.")
    from imgclf.export import ExportError, load_engine  # export builds on this module: imported here, not above

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
