"""ONNX export with a parity check, and the exported engines a run predicts with.

imgclf export runs/efficientnet_lite0-20261125-101500        # → RUN/model.onnx and RUN/export.json

The exported graph takes RGB pixels scaled to [0, 1], shape (N, 3, S, S), and returns class probabilities
(N, classes): the normalisation and the sigmoid / softmax are inside it, and the ONNX metadata names the
classes and the preprocessing. The run's `--resize` (squash, crop or pad) happens before the graph, so the
metadata names it (`imgclf.resize`). Parity is checked at export: validation images go through PyTorch and
onnxruntime, and the export fails when a top-1 class differs or a probability differs by 1e-4 or more.
`export.json` records the result either way. `parity.safetensors` keeps up to 32 of those images with PyTorch's
probabilities, so an engine is checked again each time it is loaded.

The validation images come from the run itself: training keeps a few of them in `parity-inputs.safetensors`, at
the model's input size, with PyTorch's probabilities, so that a run directory copied without its photos still
exports and runs on every engine. A run trained before that file existed reads its validation folder again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from imgclf.config import ImgclfError, Preprocessing, RunConfig
from imgclf.data.folders import DatasetError, FolderIndex, list_images
from imgclf.data.images import describe_resize
from imgclf.data.loading import decode_files
from imgclf.data.run_data import validation_index
from imgclf.deploy.engines import OnnxRuntimeEngine, ProbabilityModel, TorchEngine, create_onnx_engine
from imgclf.deploy.onnx_graph import OPSET, OnnxExportError, to_onnx_bytes
from imgclf.files import atomic_write_bytes, cache_dir, save_tensors, write_json
from imgclf.runs import WEIGHTS_FILE, RunError, load_model, load_tensors, read_temperature, read_thresholds

if TYPE_CHECKING:
    from imgclf.deploy.predictor import Run  # the predictor loads engines from here

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
REPORT_FILE = "export.json"
REFERENCE_FILE = "parity.safetensors"
PARITY_INPUTS_FILE = "parity-inputs.safetensors"
TOLERANCE = 1e-4
REFERENCE_IMAGES = 32
PARITY_INPUTS = 16
"""Validation images a run keeps for the parity check: 2.4 MB at 224 × 224."""


class ExportError(ImgclfError):
    """The model cannot be exported, or the exported model does not answer as the PyTorch model does."""


@dataclass
class Parity:
    """How an engine's probabilities compare with PyTorch's on the same images."""

    engine: str
    images: int
    max_difference: float
    tolerance: float | None
    top1_mismatches: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        close = self.tolerance is None or self.max_difference < self.tolerance
        return self.images > 0 and not self.top1_mismatches and close

    def describe(self) -> str:
        limit = f" (limit {self.tolerance:g})" if self.tolerance is not None else ""
        return (
            f"{self.engine} on {self.images} images: {len(self.top1_mismatches)} top-1 differences, "
            f"largest probability difference {self.max_difference:.2e}{limit}"
        )


@dataclass
class ExportResult:
    """What `export_onnx` wrote and how parity went."""

    onnx_path: Path
    report_path: Path
    parity: Parity
    seconds: float


def compare(engine: str, reference: np.ndarray, candidate: np.ndarray, names: Sequence[str], tolerance) -> Parity:
    """Compare two (N, classes) probability arrays row by row; `names` label the rows."""
    mismatched = np.flatnonzero(reference.argmax(axis=1) != candidate.argmax(axis=1))
    difference = float(np.abs(reference - candidate).max()) if len(reference) else 0.0
    return Parity(engine, len(reference), difference, tolerance, [names[i] for i in mismatched])


def weights_digest(run_dir: str | Path) -> str:
    """SHA-256 of the run's `model.safetensors`: an export belongs to exactly these weights."""
    path = Path(run_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise RunError(f"{path} is missing; the run directory is incomplete.")
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def onnx_metadata(
    config: RunConfig, digest: str, temperature: float, thresholds: dict[str, float] | None = None
) -> dict[str, str]:
    """The ONNX metadata: classes, preprocessing and input layout, so the file explains itself; a multi-label
    run's `thresholds` too."""
    prep = config.preprocessing
    multi_label = {
        "imgclf.output": "each label's own sigmoid probability (N, labels), in the order of imgclf.class_names; a "
        "label is predicted when its probability reaches its threshold in imgclf.thresholds",
        "imgclf.thresholds": json.dumps(thresholds),
    }
    return {
        "imgclf.model": config.train.model,
        "imgclf.class_names": json.dumps(config.class_names),
        "imgclf.preprocessing": json.dumps(asdict(prep)),
        "imgclf.resize": prep.resize,
        "imgclf.input": (
            f"RGB pixels / 255 as float32, shape (N, 3, {prep.image_size}, {prep.image_size}): "
            f"{describe_resize(prep)}, before the graph; mean/std are applied inside"
        ),
        "imgclf.output": "class probabilities (N, classes), in the order of imgclf.class_names",
        "imgclf.temperature": repr(temperature),
        "imgclf.weights_sha256": digest,
        **(multi_label if thresholds is not None else {}),
    }


def to_onnx(
    model: nn.Module,
    preprocessing: Preprocessing,
    temperature: float,
    metadata: dict[str, str],
    multi_label: bool = False,
) -> bytes:
    """The model with its normalisation, temperature and output activation (a sigmoid per label when
    `multi_label`), as ONNX with a dynamic batch size."""
    import onnx

    wrapper = ProbabilityModel(model.float().eval(), preprocessing, temperature, multi_label)
    wrapper = wrapper.to(memory_format=torch.contiguous_format)
    size = preprocessing.image_size
    try:
        graph = to_onnx_bytes(wrapper, torch.rand(2, 3, size, size), "pixels", "probabilities")
    except OnnxExportError as error:
        raise ExportError(f"PyTorch could not export the model to ONNX: {error}") from None
    proto = onnx.load_from_string(graph)
    onnx.helper.set_model_props(proto, metadata)
    return proto.SerializeToString()


def parity_files(config: RunConfig, images: Sequence[str | Path] | None = None) -> list[str]:
    """The images to check parity on: `images` (files or folders) if given, else the run's validation images."""
    if images:
        return list_images(images)
    try:
        return validation_index(config.train).files
    except DatasetError as error:
        raise ExportError(
            f"Parity is checked on the run's validation images, which cannot be read ({error}). "
            f"Give images to check on with --parity-images DIR."
        ) from None


def export_onnx(
    run: Run, out_dir: str | Path | None = None, images: Sequence[str | Path] | None = None
) -> ExportResult:
    """Export `run` to `out_dir/model.onnx` (default: the run directory) after checking parity.

    `images` are files or folders to check parity on (default: the run's validation images). Raises
    `ExportError`, with `export.json` still written, when onnxruntime disagrees with PyTorch.
    """
    return _export(run.run_dir, run.config, run.model, run.temperature, out_dir, images)


@dataclass
class ParityInputs:
    """Images to check parity on (uint8, N × 3 × S × S), their names, and PyTorch's probabilities for them if known."""

    images: torch.Tensor
    names: list[str]
    probabilities: np.ndarray | None = None


def save_parity_inputs(run: Run, index: FolderIndex, workers: int) -> None:
    """Keep `PARITY_INPUTS` readable validation images of `index` in `run`'s `parity-inputs.safetensors`, with
    `run`'s probabilities for them; the classes take turns, so that each has its images there."""
    candidates, images, names = _classes_in_turn(index), [], []
    while len(names) < PARITY_INPUTS and candidates:  # past the unreadable ones, until there are enough
        chunk, candidates = candidates[: PARITY_INPUTS - len(names)], candidates[PARITY_INPUTS - len(names) :]
        pixels, kept, _, _ = decode_files(chunk, run.preprocessing, workers)
        images.append(pixels)
        names += [chunk[i] for i in kept]
    if not names:
        return
    pixels = torch.cat(images)
    metadata = {
        "files": json.dumps(names),
        "weights_sha256": weights_digest(run.run_dir),
        "temperature": repr(run.temperature),
    }
    tensors = {"images": pixels, "probabilities": run.predict_tensors(pixels)}
    save_tensors(run.run_dir / PARITY_INPUTS_FILE, tensors, metadata=metadata)


def _classes_in_turn(index: FolderIndex) -> list[str]:
    """The files of `index`, the first of each class, then the second of each, and so on."""
    by_class: dict[int, list[str]] = {}
    for file, label in zip(index.files, index.labels):
        by_class.setdefault(label, []).append(file)
    return [file for turn in itertools.zip_longest(*by_class.values()) for file in turn if file is not None]


def parity_inputs(
    run_dir: Path, config: RunConfig, images: Sequence[str | Path] | None, digest: str, temperature: float
) -> ParityInputs:
    """What to check parity on: `images` if given, else the inputs the run keeps (with PyTorch's probabilities
    when they are of these weights and temperature), else, for an older run, its validation images."""
    stored = run_dir / PARITY_INPUTS_FILE
    if not images and stored.is_file():
        tensors, metadata = load_tensors(stored), _metadata(stored)
        current = metadata.get("weights_sha256") == digest and metadata.get("temperature") == repr(temperature)
        probabilities = tensors["probabilities"].numpy() if current else None
        return ParityInputs(tensors["images"], json.loads(metadata.get("files", "[]")), probabilities)
    files = parity_files(config, images)
    pixels, kept, skipped, _ = decode_files(files, config.preprocessing, os.cpu_count() or 1)
    for item in skipped:
        log.warning("Left out of the parity check: %s (%s)", item.path, item.reason)
    if not kept:
        raise ExportError("None of the parity images could be read. Give readable images with --parity-images DIR.")
    return ParityInputs(pixels, [files[i] for i in kept])


def _export(
    run_dir: Path,
    config: RunConfig,
    model: nn.Module,
    temperature: float,
    out_dir: str | Path | None,
    images: Sequence[str | Path] | None,
) -> ExportResult:
    start = time.perf_counter()
    out_dir = Path(out_dir) if out_dir is not None else Path(run_dir)
    digest = weights_digest(run_dir)
    inputs = parity_inputs(Path(run_dir), config, images, digest, temperature)
    pixels, names = inputs.images, inputs.names
    multi_label = config.train.multi_label
    thresholds = dict(zip(config.class_names, read_thresholds(run_dir, config.class_names))) if multi_label else None
    metadata = onnx_metadata(config, digest, temperature, thresholds)
    onnx_bytes = to_onnx(model, config.preprocessing, temperature, metadata, multi_label)
    reference = inputs.probabilities
    if reference is None:
        reference = TorchEngine(model.eval(), config.preprocessing, temperature, multi_label=multi_label)(pixels)
    candidate = OnnxRuntimeEngine(onnx_bytes)(pixels)
    parity = compare("onnx", reference, candidate, names, TOLERANCE)
    report = {
        "format": "onnx",
        "file": ONNX_FILE,
        "opset": OPSET,
        "weights_sha256": digest,
        "temperature": temperature,
        "class_names": config.class_names,
        "preprocessing": asdict(config.preprocessing),
        **({"multi_label": True, "thresholds": thresholds} if multi_label else {}),
        "parity": {**asdict(parity), "passed": parity.passed},
        "versions": _versions(),
    }
    report_path = out_dir / REPORT_FILE
    write_json(report_path, report)
    if not parity.passed:
        raise ExportError(
            f"The ONNX model does not answer as the PyTorch model does: {parity.describe()}. "
            f"Nothing was exported; see {report_path}."
        )
    keep = slice(0, REFERENCE_IMAGES)
    save_tensors(
        out_dir / REFERENCE_FILE,
        {"images": pixels[keep], "probabilities": torch.from_numpy(reference[keep])},
        metadata={"files": json.dumps(names[keep]), "weights_sha256": digest},
    )
    atomic_write_bytes(out_dir / ONNX_FILE, onnx_bytes)
    return ExportResult(out_dir / ONNX_FILE, report_path, parity, time.perf_counter() - start)


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def export_cache_dir(digest: str) -> Path:
    """Where an export made for `--engine onnx|openvino` lives when the run has none: `$IMGCLF_CACHE/onnx/`."""
    return cache_dir("onnx") / digest[:32]


def current_export(run_dir: str | Path, digest: str) -> Path | None:
    """The folder holding an export of exactly these weights and temperature that passed parity, if any."""
    temperature = read_temperature(run_dir)
    for folder in (Path(run_dir), export_cache_dir(digest)):
        report = folder / REPORT_FILE
        if not (report.is_file() and (folder / ONNX_FILE).is_file() and (folder / REFERENCE_FILE).is_file()):
            continue
        values = json.loads(report.read_text(encoding="utf-8"))
        current = values.get("weights_sha256") == digest and values.get("temperature") == temperature
        if current and values.get("parity", {}).get("passed"):
            return folder
    return None


def load_engine(name: str, run_dir: str | Path, config: RunConfig):
    """The `onnx` or `openvino` engine for `run`, exporting it into the cache first if the run has no export.

    The engine is checked on the export's reference images: any top-1 difference from PyTorch is an
    `ExportError`; fp32 engines must also stay within 1e-4 of PyTorch's probabilities.
    """
    digest = weights_digest(run_dir)
    folder = current_export(run_dir, digest)
    if folder is None:
        folder = export_cache_dir(digest)
        log.info("Exporting the model to ONNX for the %s engine (once; kept in %s).", name, folder)
        model = load_model(run_dir, config).eval()
        _export(Path(run_dir), config, model, read_temperature(run_dir), folder, None)
    engine = create_onnx_engine(name, folder / ONNX_FILE)
    reference = load_tensors(folder / REFERENCE_FILE)
    names = json.loads(_metadata(folder / REFERENCE_FILE).get("files", "[]"))
    tolerance = TOLERANCE if engine.precision == "fp32" else None
    parity = compare(name, reference["probabilities"].numpy(), engine(reference["images"]), names, tolerance)
    if not parity.passed:
        raise ExportError(
            f"The {name} engine does not answer as PyTorch does: {parity.describe()}. Use another --engine."
        )
    log.debug("Engine %s (%s) checked against PyTorch: %s.", name, engine.precision, parity.describe())
    return engine


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(path, "pt") as file:
        return file.metadata() or {}
