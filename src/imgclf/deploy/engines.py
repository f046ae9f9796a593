"""Inference engines: PyTorch, onnxruntime and OpenVINO behind one call.

An engine maps a uint8 batch (N, 3, S, S) of decoded images to class probabilities (N, classes) as a float32
numpy array. The ONNX engines read a `model.onnx` made by `imgclf.export`, whose graph holds the normalisation
and the sigmoid / softmax, so they are fed pixels scaled to [0, 1].

>>> engine = OnnxRuntimeEngine("runs/seed-cnn/model.onnx")
>>> engine(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)).shape
(1, 2)
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from imgclf.config import ENGINES, ConfigError, Preprocessing
from imgclf.devices import CPU
from imgclf.models import calibrated_probabilities
from imgclf.models.folding import check_batch, fold_if_exact

if TYPE_CHECKING:
    import openvino

log = logging.getLogger(__name__)

# Fastest first, as measured on 2 AVX2 cores with EfficientNet-Lite0 (README, "Prediction speed").
_PREFERENCE = ("openvino", "onnx", "torch")
_PACKAGES = {"torch": "torch", "onnx": "onnxruntime", "openvino": "openvino"}


class ProbabilityModel(nn.Module):
    """Pixels in [0, 1] → normalise → model → logits / temperature → class probabilities.

    The PyTorch engine runs it, and it is the graph that `imgclf export` writes. `multi_label`: each class's own
    sigmoid, not a softmax.
    """

    def __init__(
        self, model: nn.Module, preprocessing: Preprocessing, temperature: float = 1.0, multi_label: bool = False
    ):
        super().__init__()
        self.model = model
        self.temperature = temperature
        self.multi_label = multi_label
        self.register_buffer("mean", torch.tensor(preprocessing.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(preprocessing.std).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return calibrated_probabilities(self.model((pixels - self.mean) / self.std), self.temperature, self.multi_label)


class TorchEngine:
    """The PyTorch model, in inference mode, on the CPU or a CUDA device: channels-last (1.6–2× for Lite0 on a
    CPU), its BatchNorms folded into the convolutions where that gives the same outputs (`models/folding.py`)."""

    name = "torch"
    precision = "fp32"

    def __init__(
        self,
        model: nn.Module,
        preprocessing: Preprocessing,
        temperature: float = 1.0,
        device: torch.device = CPU,
        multi_label: bool = False,
    ):
        self.device = device
        model = fold_if_exact(model.eval(), check_batch(preprocessing.image_size))
        network = ProbabilityModel(model, preprocessing, temperature, multi_label).to(device).eval()
        self.network = network.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        pixels = images.to(self.device, non_blocking=True).float().div_(255.0)
        return self.network(pixels.contiguous(memory_format=torch.channels_last)).cpu().numpy()

    @property
    def per_core(self) -> TorchEngine:
        """This engine: a call runs on the calling thread's PyTorch threads, one on `Run.predict_iter`'s workers."""
        return self


def _pixels(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """uint8 (N, 3, S, S) → float32 in [0, 1], the exported graph's input."""
    array = images.numpy() if isinstance(images, torch.Tensor) else images
    return np.ascontiguousarray(array, dtype=np.float32) / np.float32(255.0)


class OnnxRuntimeEngine:
    """An exported `model.onnx` (a path, or the file's bytes) on onnxruntime's CPU provider, each call on
    `threads` threads (0: every core)."""

    name = "onnx"
    precision = "fp32"

    def __init__(self, onnx_model: str | Path | bytes, threads: int = 0):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        self.source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
        self.session = onnxruntime.InferenceSession(self.source, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: _pixels(images)})[0]

    @functools.cached_property
    def per_core(self) -> OnnxRuntimeEngine:
        """The same model for threads calling at once (`Run.predict_iter`'s workers), each call on one thread."""
        return OnnxRuntimeEngine(self.source, threads=1)


_core_lock = threading.Lock()


def openvino_core() -> openvino.Core:
    """The process's one OpenVINO `Core`, which every OpenVINO model is compiled by; it lives until the process ends.

    OpenVINO's CPU plugin (one per `Core`) gives the thread that makes it a signal stack of its own, and when freed
    gives back the stack it found there only if it is freed last, on that thread; it unmaps its own either way. Two
    Cores freed in the order they were made leave the thread on an unmapped signal stack, so the next signal
    Python handles there (Ctrl-C, or SIGCHLD once a DataLoader has had workers) ends the process in a segfault.
    """
    with _core_lock:  # two threads asking first at once would make two Cores
        return _first_core()


@functools.cache
def _first_core() -> openvino.Core:
    import openvino

    return openvino.Core()


class OpenVinoEngine:
    """An exported `model.onnx` compiled by OpenVINO for the CPU: bf16 where the CPU has it, else fp32.

    Threads may call it at once: each has an infer request of its own, and the calls take turns on the cores.
    """

    name = "openvino"

    def __init__(self, onnx_path: str | Path):
        self.compiled = openvino_core().compile_model(str(onnx_path), "CPU", {"PERFORMANCE_HINT": "LATENCY"})
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        self.precision = {"f32": "fp32", "f16": "fp16"}.get(hint, hint)
        self._requests = threading.local()

    def __call__(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        if not hasattr(self._requests, "request"):
            self._requests.request = self.compiled.create_infer_request()
        result = self._requests.request.infer({0: _pixels(images)})
        return np.array(result[self.compiled.output(0)], dtype=np.float32)

    @property
    def per_core(self) -> OpenVinoEngine:
        """This engine: `Run.predict_iter`'s workers share it (a second compile with one stream a core cost Lite0
        about 300 MB more for the same CPU time an image)."""
        return self


def installed_engines() -> list[str]:
    """The engines whose runtime is installed, fastest first."""
    return [name for name in _PREFERENCE if importlib.util.find_spec(_PACKAGES[name]) is not None]


def pick_engine(name: str, device: torch.device = CPU) -> str:
    """`auto` → the fastest installed engine for `device` (PyTorch on a GPU); any other name is checked to be
    known, installed, and able to run on `device` (the ONNX engines run on the CPU)."""
    if name not in ENGINES:
        raise ConfigError(f"Unknown engine. Received: --engine={name!r}. Choose one of {list(ENGINES)}.")
    if device.type != "cpu":
        if name not in ("auto", "torch"):
            raise ConfigError(
                f"Engine {name} runs on the CPU. Received: --engine={name} with --device={device.type}. "
                "Use --engine torch on a GPU, or --device cpu."
            )
        return "torch"
    installed = installed_engines()
    if name == "auto":
        return installed[0]
    if name not in installed:
        extra = " (pip install 'imgclf[openvino]')" if name == "openvino" else ""
        raise ConfigError(
            f"Engine {name} needs the package {_PACKAGES[name]}, which is not installed{extra}. "
            f"Received: --engine={name}. Installed engines: {installed}."
        )
    return name


def create_onnx_engine(name: str, onnx_path: str | Path) -> OnnxRuntimeEngine | OpenVinoEngine:
    """The `onnx` or `openvino` engine for an exported model file."""
    return OnnxRuntimeEngine(onnx_path) if name == "onnx" else OpenVinoEngine(onnx_path)
