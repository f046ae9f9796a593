"""Device and precision choices. CI has no GPU: CUDA is faked where only the decision is tested, never initialised."""

from __future__ import annotations

import json

import pytest
import torch

import imgclf
from imgclf import devices
from imgclf.cli import main
from imgclf.config import ConfigError, ImgclfError
from imgclf.deploy.engines import pick_engine
from imgclf.training import loop

CUDA = torch.device("cuda")
CPU = torch.device("cpu")


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_is_the_cpu_without_cuda_and_cuda_is_refused_clearly(no_cuda):
    assert devices.resolve_device("auto") == CPU
    with pytest.raises(ImgclfError, match="No CUDA device is available. Received: --device=cuda"):
        devices.resolve_device("cuda")


def test_auto_picks_cuda_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.resolve_device("auto") == CUDA
    assert devices.resolve_device("cuda:1") == torch.device("cuda", 1)


@pytest.mark.parametrize(("bf16_supported", "expected"), [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_precision_on_a_gpu_is_bf16_else_fp16(monkeypatch, bf16_supported, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16_supported)
    assert devices.resolve_precision("auto", CUDA) == expected
    assert devices.resolve_precision("fp16", CUDA) == torch.float16
    assert devices.resolve_precision("fp32", CUDA) is None


@pytest.mark.parametrize(("fast_bf16", "expected"), [(True, torch.bfloat16), (False, None)])
def test_auto_precision_on_a_cpu_follows_its_bf16_support(monkeypatch, fast_bf16, expected):
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: fast_bf16)
    assert devices.resolve_precision("auto", CPU) == expected
    assert devices.resolve_precision("bf16", CPU) == torch.bfloat16


def test_fp16_on_a_cpu_is_refused_before_training(small_photos, tmp_path, capsys):
    with pytest.raises(ImgclfError, match="fp16 training needs a CUDA device"):
        devices.resolve_precision("fp16", CPU)
    code = main(["train", str(small_photos / "train"), "--model", "seed-cnn", "--precision", "fp16", "--device", "cpu"])
    assert code == 1
    assert "--precision=fp16" in capsys.readouterr().err


def test_only_fp16_scales_gradients():
    assert devices.gradient_scaler(CPU, torch.float16).is_enabled()  # on CUDA alike, which CI cannot build
    assert not devices.gradient_scaler(CPU, torch.bfloat16).is_enabled()
    assert not devices.gradient_scaler(CPU, None).is_enabled()
    assert devices.pins_memory(CUDA) and not devices.pins_memory(CPU)


def test_on_a_gpu_the_onnx_engines_are_refused_and_auto_is_torch():
    assert pick_engine("auto", CUDA) == "torch"
    with pytest.raises(ConfigError, match="Engine onnx runs on the CPU"):
        pick_engine("onnx", CUDA)


def test_predict_on_cuda_without_one_is_a_clear_error(trained_run, no_cuda, capsys):
    code = main(["predict", str(trained_run.run_dir), str(trained_run.run_dir), "--device", "cuda"])
    assert code == 1
    assert "No CUDA device is available" in capsys.readouterr().err


def test_the_fp16_training_step_scales_its_loss_and_resumes_the_scale(small_photos, tmp_path, monkeypatch):
    """The fp16 path (autocast + GradScaler) as it runs on a GPU, here on the CPU, which can do both slowly."""
    monkeypatch.setattr(loop, "resolve_precision", lambda name, device: torch.float16)
    options = {"val": str(small_photos / "val"), "model": "seed-cnn", "batch_size": 8, "seed": 0}
    run = imgclf.train(small_photos / "train", epochs=1, out=str(tmp_path / "run"), **options)
    state_file = run.run_dir / "checkpoint" / "state.json"
    state = json.loads(state_file.read_text())
    assert state["gradient_scaler"]["scale"] == 2.0**16  # the starting scale: no step overflowed
    assert all(torch.isfinite(torch.tensor(record["loss"])) for record in run.history)
    state["gradient_scaler"]["scale"] = 1024.0  # as if steps had overflowed: the resumed run must go on from it
    state_file.write_text(json.dumps(state))
    resumed = imgclf.train(resume=run.run_dir, epochs=2)
    assert [int(record["epoch"]) for record in resumed.history] == [1, 2]
    assert json.loads(state_file.read_text())["gradient_scaler"]["scale"] <= 1024.0
