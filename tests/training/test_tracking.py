"""`--track mlflow`: the options, every epoch and the run's files logged to an MLflow store, and resumed runs
continuing the same MLflow run."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from tests.conftest import read_history

import imgclf
from imgclf.cli import main
from imgclf.training.tracking import EPOCH_METRICS, NoTracking, TrackingError, tracker_for

train_tracked = functools.partial(imgclf.train, model="seed-cnn", batch_size=8, seed=0, track="mlflow")


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    """A local MLflow store in tmp, named by MLFLOW_TRACKING_URI as a user would."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # whatever MLflow writes beside its store stays in tmp
    return MlflowClient(tracking_uri=uri)


def logged_run_id(run_dir: Path) -> str:
    return json.loads((run_dir / "mlflow.json").read_text())["run_id"]


def steps(client: MlflowClient, run_id: str, metric: str) -> list[int]:
    return [point.step for point in sorted(client.get_metric_history(run_id, metric), key=lambda p: p.step)]


def test_a_tracked_run_logs_its_options_epochs_and_files(small_photos, tmp_path, store):
    run = train_tracked(small_photos / "train", val=str(small_photos / "val"), augment="seed", epochs=2, out="run")
    logged = store.get_run(logged_run_id(run.run_dir))
    assert logged.info.run_name == "run" and logged.info.status == "FINISHED"
    params = logged.data.params
    assert params["model"] == "seed-cnn" and params["epochs"] == "2" and params["track"] == "mlflow"
    assert params["augment.zoom"] == "0.2" and params["augment.horizontal_flip"] == "True"
    history = read_history(run.run_dir)
    for metric in EPOCH_METRICS:
        points = sorted(store.get_metric_history(logged.info.run_id, metric), key=lambda p: p.step)
        assert [(p.step, p.value) for p in points] == [
            (int(row["epoch"]), pytest.approx(float(row[metric]))) for row in history
        ]
    files = {item.path for item in store.list_artifacts(logged.info.run_id)}
    assert {"loss.png", "accuracy.png", "report.html", "metrics.json", "model"} <= files
    model_files = {item.path for item in store.list_artifacts(logged.info.run_id, "model")}
    assert model_files == {"model/model.safetensors", "model/config.json"}
    assert json.loads((run.run_dir / "config.json").read_text())["train"]["track"] == "mlflow"


def test_resume_continues_the_same_mlflow_run(small_photos, tmp_path, store, capsys):
    def interrupt_in_epoch_2(epoch: int, step: int, steps: int) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(imgclf.TrainingInterrupted):
        train_tracked(
            small_photos / "train", val=str(small_photos / "val"), epochs=3, out="run", progress=interrupt_in_epoch_2
        )
    run_id = logged_run_id(tmp_path / "run")
    assert store.get_run(run_id).info.status == "KILLED"
    assert steps(store, run_id, "val_loss") == [1]
    assert main(["train", "--resume", "run", "--track", "none"]) == 1
    assert "Received: --track." in capsys.readouterr().err
    resumed = imgclf.train(resume=tmp_path / "run")
    assert logged_run_id(resumed.run_dir) == run_id
    assert store.get_run(run_id).info.status == "FINISHED"
    assert steps(store, run_id, "val_loss") == [1, 2, 3]
    assert len(store.search_runs([store.get_run(run_id).info.experiment_id])) == 1


def test_resume_in_a_store_without_the_run_says_which_store_to_use(small_photos, tmp_path, store, monkeypatch):
    run = train_tracked(small_photos / "train", val=str(small_photos / "val"), epochs=1, out="run")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'other.db'}")
    with pytest.raises(TrackingError, match=f"names MLflow run {logged_run_id(run.run_dir)}, which the store"):
        imgclf.train(resume=run.run_dir, epochs=2)


def test_a_store_mlflow_cannot_reach_is_one_error_before_the_first_epoch(small_photos, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")  # nothing listens on port 1
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    out = tmp_path / "run"
    with pytest.raises(TrackingError, match=r"Logging to MLflow at http://127.0.0.1:1 failed \("):
        train_tracked(small_photos / "train", val=str(small_photos / "val"), epochs=1, out=str(out))
    assert not out.exists()  # stopped before its first epoch, like any other error there


def test_missing_mlflow_is_one_line_naming_the_extra(small_photos, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    out = tmp_path / "run"
    assert (
        main(["train", str(small_photos / "train"), "--model", "seed-cnn", "--track", "mlflow", "--out", str(out)]) == 1
    )
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --track mlflow needs MLflow, which is not installed. Received: --track=mlflow. "
        "Install it with pip install 'imgclf[mlflow]', or train with --track none."
    ]
    assert not out.exists()


def test_only_the_main_process_logs():
    assert isinstance(tracker_for("mlflow", is_main=False), NoTracking)
    assert not isinstance(tracker_for("mlflow", is_main=True), NoTracking)
    assert isinstance(tracker_for("none", is_main=True), NoTracking)
