"""Training in several processes: torchrun with two CPU processes (gloo) against one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tests.conftest import make_synthetic_classes, read_history

import imgclf
from imgclf.cli import main
from imgclf.config import ConfigError
from imgclf.runs import load_tensors
from imgclf.training.distributed import Shard, _exit_code, check_batch_size, shard_batches

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
# 13 training images in batches of 8: the last batch of 5 splits 3 + 2, which only weighted losses average right.
CLASS_COUNTS = {"red": 9, "green": 8}
OPTIONS = {
    "model": "seed-cnn",
    "augment": "none",
    "image_size": 24,
    "val_split": 0.25,
    "batch_size": 8,
    "epochs": 3,
    "seed": 3,
    "precision": "fp32",  # bf16 (auto on CPUs that have it) rounds differently for 8 images than for 2 × 4
}
ARGS = [f"--{name.replace('_', '-')}={value}" for name, value in OPTIONS.items()]


def run_processes(command: list[str], cwd: Path, cache: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    environment = {**os.environ, "IMGCLF_CACHE": str(cache)}
    result = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def max_difference(first: Path, second: Path) -> float:
    a, b = load_tensors(first), load_tensors(second)
    assert a.keys() == b.keys()
    return max(float((a[name] - b[name]).abs().max()) for name in a)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_classes(tmp_path_factory.mktemp("ddp") / "data", CLASS_COUNTS)


@pytest.fixture(scope="module")
def torchrun_run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """Two processes started by torchrun, without --out: the run goes to runs/ under their working folder."""
    folder = tmp_path_factory.mktemp("torchrun")
    result = run_processes([*TORCHRUN, "-m", "imgclf", "train", str(data), *ARGS], folder, folder / "cache")
    return folder, result


def test_each_process_takes_every_other_image_of_each_global_batch():
    plan = [[9, 4, 6, 1, 0, 3, 8, 2], [7, 5, 11, 10, 12], [13]]
    assert shard_batches(plan, 0, 2) == [Shard([9, 6, 0, 8], 1.0), Shard([7, 11, 12], 1.2), Shard([13], 2.0)]
    # Process 1 has nothing of the last batch: it trains on a stand-in whose loss weighs nothing.
    assert shard_batches(plan, 1, 2) == [Shard([4, 1, 3, 2], 1.0), Shard([5, 10], 0.8), Shard([13], 0.0)]
    assert shard_batches(plan, 0, 1) == [Shard(batch, 1.0) for batch in plan]


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("batch_size", [1, 2, 5, 8])
def test_weighted_shards_average_to_the_gradient_of_the_global_batch(batch_size, world_size):
    per_image = torch.randn(batch_size, 3, dtype=torch.float64)  # what each image's loss adds to a gradient
    batch = list(range(batch_size))
    shards = [shard_batches([batch], rank, world_size)[0] for rank in range(world_size)]
    # DDP averages the processes' gradients of their weighted mean losses.
    averaged = sum(shard.loss_weight * per_image[shard.rows].mean(dim=0) for shard in shards) / world_size
    assert torch.allclose(averaged, per_image.mean(dim=0))


def test_batch_size_must_divide_by_the_number_of_processes(data, capsys):
    with pytest.raises(ConfigError, match=r"--batch-size=9, --nproc=2\. .* multiple of 2, such as 8 or 10"):
        check_batch_size(9, 2)
    check_batch_size(12, 3)
    assert main(["train", str(data), "--model", "seed-cnn", "--batch-size", "8", "--nproc", "3"]) == 1
    error = capsys.readouterr().err
    assert "--batch-size=8, --nproc=3" in error
    assert "Traceback" not in error


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["/no/such/folder"], "Data folder /no/such/folder does not exist"),
        (["DATA", "--device", "cuda"], "No CUDA device is available"),
        (["DATA", "--precision", "fp16", "--device", "cpu"], "fp16 training needs a CUDA device"),
    ],
)
def test_nproc_checks_the_options_once_before_starting_processes(data, options, message, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on CI, also on a machine with a GPU
    monkeypatch.setattr("imgclf.training.distributed.launch", lambda *args: pytest.fail("processes were started"))
    arguments = [str(data) if option == "DATA" else option for option in options]
    assert main(["train", *arguments, "--model", "seed-cnn", "--nproc", "2"]) == 1
    error = capsys.readouterr().err
    assert error.count(message) == 1 and error.count("\n") == 1, error


def test_failed_processes_give_one_exit_code():
    failures = {rank: SimpleNamespace(exitcode=code) for rank, code in ((0, -15), (1, 1))}
    assert _exit_code(failures) == 1
    assert _exit_code({0: SimpleNamespace(exitcode=130), 1: SimpleNamespace(exitcode=-2)}) == 130
    assert _exit_code({0: SimpleNamespace(exitcode=-9)}) == 137


def test_two_processes_end_with_the_weights_of_one(torchrun_run, data, tmp_path):
    folder, _ = torchrun_run
    (run_dir,) = (folder / "runs").iterdir()
    single = imgclf.train(data, out=str(tmp_path / "single"), **OPTIONS)
    difference = max(
        max_difference(single.run_dir / "checkpoint" / "last.safetensors", run_dir / "checkpoint" / "last.safetensors"),
        max_difference(single.run_dir / "model.safetensors", run_dir / "model.safetensors"),
    )
    print(f"largest weight difference, 1 vs 2 processes: {difference:.3g}")
    assert difference < 1e-4
    # The weights moved far from where they started: comparing untrained models would prove nothing.
    torch.manual_seed(OPTIONS["seed"])
    start = imgclf.create_model("seed-cnn", 2, OPTIONS["image_size"]).state_dict()
    trained = load_tensors(run_dir / "checkpoint" / "last.safetensors")
    assert max(float((trained[name] - start[name]).abs().max()) for name in start) > 1000 * difference
    for one, two in zip(read_history(single.run_dir), read_history(run_dir), strict=True):
        for key in ("loss", "val_loss"):
            assert float(one[key]) == pytest.approx(float(two[key]), abs=1e-4)
        for key in ("accuracy", "val_accuracy"):
            assert float(one[key]) == pytest.approx(float(two[key]), abs=1e-9)


def test_only_the_main_process_logs_and_writes(torchrun_run):
    folder, result = torchrun_run
    runs = list((folder / "runs").iterdir())
    assert len(runs) == 1, runs  # the processes agreed on one timestamped run directory
    assert {p.name for p in runs[0].iterdir()} >= {"config.json", "model.safetensors", "history.csv", "report.html"}
    assert not list(runs[0].rglob("*.tmp"))
    for line in ("Found 13 images belonging to 2 classes", "Epoch 1/3", "Epoch 3/3", "Best val_loss"):
        assert result.stderr.count(line) == 1, line
    assert result.stdout.count("Run directory:") == 1
    assert "on 2 processes (cpu)" in result.stderr
    hardware = json.loads((runs[0] / "config.json").read_text())["hardware"]
    assert hardware["processes"] == 2 and hardware["precision"] == "fp32"


RECORDING_WORKER = """
import os
import sys

import imgclf.files
from imgclf.cli import main

write = imgclf.files.atomic_write_bytes


def recording_write(path, data, *args, **kwargs):
    with open(os.environ["WRITES_LOG"] + os.environ["RANK"], "a") as log:
        log.write(f"{path}\\n")
    write(path, data, *args, **kwargs)


imgclf.files.atomic_write_bytes = recording_write
sys.exit(main())
"""


def test_with_a_frozen_backbone_the_main_process_alone_fills_the_feature_cache(tmp_path, small_photos, monkeypatch):
    """Every file written (run directory and feature cache) goes through `atomic_write_bytes`: record them."""
    worker = tmp_path / "worker.py"
    worker.write_text(RECORDING_WORKER)
    command = [*TORCHRUN, str(worker), "train", str(small_photos / "train"), "--val", str(small_photos / "val")]
    command += ["--image-size", "96", "--batch-size", "8", "--epochs", "2", "--out", str(tmp_path / "run")]
    monkeypatch.setenv("WRITES_LOG", str(tmp_path / "writes-rank"))
    run_processes(command, tmp_path, tmp_path / "cache")
    assert not (tmp_path / "writes-rank1").exists()
    written = (tmp_path / "writes-rank0").read_text().splitlines()
    cached = [path for path in written if path.startswith(str(tmp_path / "cache" / "features"))]
    assert len(cached) == len(set(cached)) == 16 + 6  # every image's features computed once
    assert str(tmp_path / "run" / "model.safetensors") in written
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["dataset"]["features_cached"] is True
    assert [row["epoch"] for row in read_history(tmp_path / "run")] == ["1", "2"]


@pytest.mark.slow
def test_nproc_launches_torchrun_survives_ctrl_c_and_resumes(data, tmp_path, capsys):
    environment = {**os.environ, "IMGCLF_CACHE": str(tmp_path / "cache")}
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "imgclf", "train", str(data), *ARGS, "--epochs=1000", f"--out={run_dir}"]
    process = subprocess.Popen(
        [*command, "--nproc", "2"], env=environment, start_new_session=True, stderr=subprocess.PIPE, text=True
    )
    state = run_dir / "checkpoint" / "state.json"
    deadline = time.monotonic() + 90
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert state.exists(), process.communicate(timeout=30)[1][-3000:] if process.poll() is not None else "too slow"
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    _, stderr = process.communicate(timeout=60)  # no process may wait forever for another
    assert process.returncode == 130
    assert stderr.count("Interrupted; epoch") == 1, stderr[-3000:]
    assert "Traceback" not in stderr
    saved = json.loads(state.read_text())["epoch"]
    assert saved < 1000

    resume = [*TORCHRUN, "-m", "imgclf", "train", "--resume", str(run_dir), f"--epochs={saved + 1}"]
    resumed = run_processes(resume, tmp_path, tmp_path / "cache")
    assert f"Resuming {run_dir} from epoch {saved + 1}" in resumed.stderr
    assert [int(row["epoch"]) for row in read_history(run_dir)] == list(range(1, saved + 2))
    assert (run_dir / "report.html").exists()
    # `--nproc` checks a resumed run's batch size (8) before it starts any process.
    assert main(["train", "--resume", str(run_dir), f"--epochs={saved + 2}", "--nproc", "3"]) == 1
    assert "--batch-size 8, which 3 processes cannot split evenly" in capsys.readouterr().err
    assert main(["train", "--resume", str(run_dir), "--nproc", "2"]) == 1
    assert f"has already trained {saved + 1} epochs" in capsys.readouterr().err


def processes_naming(text: str) -> list[int]:
    """The ids of the running processes whose command line holds `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            pass
    return found


@pytest.mark.slow
def test_sigterm_to_the_nproc_launcher_stops_every_process(data, tmp_path):
    run_dir = tmp_path / "run-to-stop"
    command = [sys.executable, "-m", "imgclf", "train", str(data), *ARGS, "--epochs=1000", f"--out={run_dir}"]
    environment = {**os.environ, "IMGCLF_CACHE": str(tmp_path / "cache")}
    process = subprocess.Popen([*command, "--nproc", "2"], env=environment, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while not (run_dir / "checkpoint" / "state.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(processes_naming(str(run_dir))) >= 3  # the launcher and its two training processes
    process.terminate()  # SIGTERM to the launcher alone
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in stderr
    deadline = time.monotonic() + 10
    while processes_naming(str(run_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_naming(str(run_dir)) == []
