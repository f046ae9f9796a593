"""A frozen backbone's forward pass on the fastest engine present: OpenVINO on a CPU when it is installed.

Extracting features is pure inference, so it need not run in PyTorch. The backbone is exported to ONNX once (into
its feature-cache folder, whose name already says which backbone, weights, preprocessing and precision it is),
compiled by OpenVINO (bf16 where the CPU has it), and used only when it agrees with PyTorch on a check batch;
feature extraction then checks it on one photo of every chunk too (features.py), as no batch of noise shows every
way an engine can go wrong on a given CPU.
On 2 Zen 4 cores EfficientNet-Lite0 ran at 285–325 images/s this way against 133 in PyTorch bf16, for about a
second of export and compilation (docs/performance.md).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imgclf.deploy.engines import openvino_core
from imgclf.deploy.onnx_graph import to_onnx_bytes
from imgclf.files import atomic_write_bytes

log = logging.getLogger(__name__)

WORTH_EXPORTING = 500
"""The fewest images for which exporting a backbone (about a second with compiling) pays back on a CPU."""
AGREEMENT = 0.99
"""The lowest cosine similarity between PyTorch's and the engine's output for an image: on the check batch against
PyTorch in fp32, on the photos feature extraction checks against PyTorch in the run's precision. bf16 OpenVINO gave
0.9998 and 0.9999 there on an AMX Xeon, while bf16 itself strays to 0.990 from fp32 on a few photos."""

Backbone = Callable[[torch.Tensor], torch.Tensor]
"""Normalised float images (N, 3, S, S) → features (N, ...), without gradients."""


class OpenVinoBackbone:
    """An exported backbone compiled by OpenVINO for the CPU: in bf16 where the CPU has it, unless `fp32`.

    The compiled model is kept in an `openvino/` folder beside the export (about 20 MB for Lite0), which takes
    compiling it again from 0.25 s to 0.05.
    """

    def __init__(self, onnx_path: Path, fp32: bool = False):
        settings = {
            "PERFORMANCE_HINT": "LATENCY",
            "CACHE_DIR": str(onnx_path.parent / "openvino"),
            **({"INFERENCE_PRECISION_HINT": "f32"} if fp32 else {}),
        }
        self.compiled = openvino_core().compile_model(str(onnx_path), "CPU", settings)
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        self.request = self.compiled.create_infer_request()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        pixels = np.ascontiguousarray(images.float().numpy())
        return torch.from_numpy(np.array(self.request.infer({0: pixels})[self.compiled.output(0)], dtype=np.float32))


def export_backbone(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Write `module` as ONNX with a dynamic batch size."""
    atomic_write_bytes(path, to_onnx_bytes(module.eval(), example, "images", "features"), False)


def _worth_trying(onnx_path: Path, images: int, device: torch.device) -> bool:
    """Whether OpenVINO may run a backbone faster: on a CPU, with OpenVINO installed, and with an export at
    `onnx_path` already or `WORTH_EXPORTING` `images` or more to pay for one."""
    if device.type != "cpu" or importlib.util.find_spec("openvino") is None:
        return False
    return onnx_path.is_file() or images >= WORTH_EXPORTING


@torch.no_grad()
def fastest_backbone(
    module: nn.Module, check: torch.Tensor, onnx_path: Path, fp32: bool, images: int
) -> Backbone | None:
    """OpenVINO running `module` (in fp32 if `fp32`, else as fast as the CPU allows) when it is installed and
    agrees with PyTorch on `check`, a normalised batch on the CPU; None when PyTorch should run it.

    The export is kept at `onnx_path` and made only for `WORTH_EXPORTING` `images` or more.
    """
    if not _worth_trying(onnx_path, images, check.device):
        return None
    try:
        if not onnx_path.is_file():
            export_backbone(module.eval(), check[:1], onnx_path)  # checked below on another batch size
        engine = OpenVinoBackbone(onnx_path, fp32)
        expected, got = module(check).float(), engine(check)
    except Exception as error:  # the exporter and OpenVINO raise many types; all mean "use PyTorch"
        log.info("Extracting features with PyTorch: OpenVINO could not run the backbone (%s).", error)
        return None
    if got.shape != expected.shape:
        log.warning("Extracting features with PyTorch: OpenVINO gave %s features, not %s.", got.shape, expected.shape)
        return None
    similarity = agreement(expected, got)
    if similarity < AGREEMENT:
        log.warning("Extracting features with PyTorch: OpenVINO's differ from PyTorch's (cosine %.3f).", similarity)
        return None
    log.info("Extracting features with OpenVINO (%s; cosine to PyTorch ≥ %.4f).", engine.precision, similarity)
    return engine


def agreement(expected: torch.Tensor, got: torch.Tensor) -> float:
    """The lowest cosine similarity between a row of `expected` (PyTorch's features) and the same row of `got`."""
    return float(F.cosine_similarity(expected.flatten(1), got.flatten(1)).min())
