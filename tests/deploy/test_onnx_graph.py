"""A module as ONNX bytes: TorchScript's exporter first, dynamo's when it fails, a dynamic batch either way."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

from imgclf.deploy import onnx_graph
from imgclf.deploy.onnx_graph import OnnxExportError, to_onnx_bytes


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()


def run_onnx(graph: bytes, images: torch.Tensor) -> np.ndarray:
    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images.numpy()})[0]


@pytest.mark.parametrize("torchscript_fails", [False, True])
def test_the_graph_answers_as_pytorch_at_another_batch_size(torchscript_fails, monkeypatch):
    used = []
    for name in ("_torchscript_export", "_dynamo_export"):
        original = getattr(onnx_graph, name)

        def recorded(*args, original=original, name=name):
            used.append(name)
            if name == "_torchscript_export" and torchscript_fails:
                raise RuntimeError("cannot trace this")
            return original(*args)

        monkeypatch.setattr(onnx_graph, name, recorded)
    module = small_cnn()

    graph = to_onnx_bytes(module, torch.rand(2, 3, 16, 16), "images", "features")

    assert used == (["_torchscript_export", "_dynamo_export"] if torchscript_fails else ["_torchscript_export"])
    images = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        np.testing.assert_allclose(run_onnx(graph, images), module(images).numpy(), atol=1e-5)


def test_a_module_neither_exporter_can_take_is_an_export_error(monkeypatch):
    def fails(*args):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(onnx_graph, "_torchscript_export", fails)
    monkeypatch.setattr(onnx_graph, "_dynamo_export", fails)
    with pytest.raises(OnnxExportError, match="unsupported operator"):
        to_onnx_bytes(small_cnn(), torch.rand(2, 3, 16, 16), "images", "features")
