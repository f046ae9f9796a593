"""The inference engines, where a test of export does not already cover them."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from torch import nn

from imgclf.deploy.engines import OpenVinoEngine
from imgclf.deploy.onnx_graph import to_onnx_bytes

# Run in a process of its own: before the fix, Python died of a segfault on the signal instead of raising.
CTRL_C_AFTER_TWO_OPENVINO_MODELS = """
import os, signal, sys
from pathlib import Path
from imgclf.deploy.engines import OpenVinoEngine
from imgclf.training.frozen import OpenVinoBackbone

first, second = {first}(Path(sys.argv[1])), {second}(Path(sys.argv[1]))
del first, second  # freed in the order they were made
try:
    os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends
except KeyboardInterrupt:
    print("interrupted")
"""


@pytest.mark.parametrize("first", ["OpenVinoEngine", "OpenVinoBackbone"])
def test_ctrl_c_still_interrupts_once_two_openvino_models_are_freed(tmp_path, first):
    """A notebook or the server that loads two runs on OpenVINO (or extracts features, then predicts) and drops
    them must still stop on Ctrl-C, and live through the SIGCHLD of DataLoader workers."""
    path = tmp_path / "model.onnx"
    network = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    path.write_bytes(to_onnx_bytes(network.eval(), torch.zeros(1, 3, 8, 8), "images", "probabilities"))
    code = CTRL_C_AFTER_TWO_OPENVINO_MODELS.format(first=first, second="OpenVinoEngine")
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout) == (0, "interrupted\n"), result.stderr


@pytest.mark.parametrize("per_core", [False, True])
def test_threads_calling_one_openvino_engine_at_once_each_get_their_own_answer(tmp_path, per_core):
    """`Run.predict_iter` predicts a batch on every core at once; the engine had one infer request."""
    path = tmp_path / "model.onnx"
    network = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    path.write_bytes(to_onnx_bytes(network.eval(), torch.zeros(1, 3, 8, 8), "images", "probabilities"))
    engine = OpenVinoEngine(path).per_core if per_core else OpenVinoEngine(path)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8, generator=generator) for _ in range(200)]
    alone = [engine(batch) for batch in batches]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(engine, batches))
    assert all(np.array_equal(a, b) for a, b in zip(alone, together))
