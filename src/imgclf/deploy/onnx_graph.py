"""A PyTorch module as ONNX bytes, with a dynamic batch size: what `imgclf export` and the frozen-backbone
engines both need.

TorchScript's exporter runs first: it exported EfficientNet-Lite0 in 0.3–0.8 s, where the dynamo exporter took
5.7–10 s, and a feed-forward CNN is what it handles well. It is deprecated, so when it fails (a model it cannot
trace, or a PyTorch that no longer ships it) the dynamo exporter takes over. Callers check what they get
against PyTorch, whichever exporter made it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import torch
from torch import nn

log = logging.getLogger(__name__)

OPSET = 18


class OnnxExportError(RuntimeError):
    """Neither exporter could turn the module into ONNX."""


def to_onnx_bytes(module: nn.Module, example: torch.Tensor, input_name: str, output_name: str) -> bytes:
    """`module` (in eval mode, on the CPU) as an ONNX model whose first input dimension is the batch."""
    # The exporters report their steps with print() and warnings no user can act on; keep them off the terminal.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return _torchscript_export(module, example, input_name, output_name)
        except Exception as error:  # the exporter raises many types; all mean "try the other one"
            log.debug("TorchScript's ONNX exporter failed (%s); using dynamo's.", error)
        try:
            return _dynamo_export(module, example, input_name, output_name)
        except Exception as error:
            raise OnnxExportError(str(error)) from None


def _torchscript_export(module: nn.Module, example: torch.Tensor, input_name: str, output_name: str) -> bytes:
    buffer = io.BytesIO()
    torch.onnx.export(
        module,
        (example,),
        buffer,
        dynamo=False,
        input_names=[input_name],
        output_names=[output_name],
        dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
        opset_version=OPSET,
    )
    return buffer.getvalue()


def _dynamo_export(module: nn.Module, example: torch.Tensor, input_name: str, output_name: str) -> bytes:
    program = torch.onnx.export(
        module,
        (example,),
        dynamo=True,
        input_names=[input_name],
        output_names=[output_name],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
        opset_version=OPSET,
        verbose=False,
    )
    return program.model_proto.SerializeToString()
