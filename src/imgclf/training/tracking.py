"""Experiment tracking: a run's options, epochs and files logged to MLflow as it trains (`--track mlflow`).

imgclf train data/training_set --val data/val_set --track mlflow
MLFLOW_TRACKING_URI=http://127.0.0.1:5000 imgclf train data/training_set --track mlflow

The loop holds one `Tracker`: `start` once the data and model are ready, `log_epoch` after each saved epoch,
`finish` when the run directory is complete or training stopped. MLflow is imported only when a run is tracked,
so imgclf needs it only then (`pip install 'imgclf[mlflow]'`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from imgclf.config import ImgclfError, TrainConfig
from imgclf.files import write_json

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

TRACKING_FILE = "mlflow.json"
"""In the run directory: the MLflow run it logs to and where, so that `--resume` continues that run."""
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "seconds")
# Each file of a finished run, and the artifact folder it is logged into ("" for the top).
ARTIFACTS = {
    "loss.png": "",
    "accuracy.png": "",
    "report.html": "",
    "metrics.json": "",
    "model.safetensors": "model",
    "config.json": "model",
    "model.onnx": "model",
}
MISSING_MLFLOW = (
    "--track mlflow needs MLflow, which is not installed. Received: --track=mlflow. "
    "Install it with pip install 'imgclf[mlflow]', or train with --track none."
)


class TrackingError(ImgclfError):
    """MLflow is missing, or the run a resumed run logged to cannot be found."""


class Tracker(Protocol):
    """What the training loop tells an experiment tracker."""

    def start(self, config: TrainConfig, run_dir: Path) -> None:
        """Open the tracked run of `run_dir` (a new one, or the one a resumed run logged to) with `config`."""

    def log_epoch(self, record: dict) -> None:
        """Log one finished epoch: a row of `history.csv`, its `epoch` as the step."""

    def finish(self, run_dir: Path, stopped: BaseException | None = None) -> None:
        """Log the files of `run_dir` and close the tracked run (as killed or failed when training `stopped`)."""


class NoTracking:
    """`--track none`, and every process but the main one under torchrun: nothing is logged."""

    def start(self, config: TrainConfig, run_dir: Path) -> None:
        pass

    def log_epoch(self, record: dict) -> None:
        pass

    def finish(self, run_dir: Path, stopped: BaseException | None = None) -> None:
        pass


def tracker_for(track: str, is_main: bool) -> Tracker:
    """The tracker `--track` names, for the main process (the others log nothing); raises `TrackingError` when
    MLflow is needed and missing."""
    if track == "none":
        return NoTracking()
    check_installed(track)
    return MlflowTracker() if is_main else NoTracking()


def check_installed(track: str) -> None:
    """Raise `TrackingError` when `track` needs MLflow and it is not installed."""
    if track == "mlflow":
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise TrackingError(MISSING_MLFLOW) from None


class MlflowTracker:
    """Logs to MLflow: the options as params, each epoch's metrics at step = epoch, then the run's files.

    The store is `$MLFLOW_TRACKING_URI` (MLflow's default otherwise: `mlflow.db` and `mlruns/` in the working
    folder), the experiment `$MLFLOW_EXPERIMENT_NAME` (default `Default`), the run's name its directory's.
    """

    def __init__(self) -> None:
        self.client: MlflowClient | None = None
        self.run_id: str | None = None
        self.uri: str | None = None

    def start(self, config: TrainConfig, run_dir: Path) -> None:
        from mlflow.tracking import MlflowClient

        saved = _read_tracking_file(run_dir)
        self.uri = (os.environ.get("MLFLOW_TRACKING_URI") or saved["tracking_uri"]) if saved else _default_uri()
        with self._errors_named():
            self.client = MlflowClient(tracking_uri=self.uri)
            if saved is not None:
                _check_run_exists(self.client, saved["run_id"], run_dir, self.uri)
                self.run_id = saved["run_id"]
                self.client.update_run(self.run_id, status="RUNNING")
                log.info("Logging to MLflow run %s at %s again.", self.run_id, self.uri)
                return
            tags = {"imgclf.run_dir": str(run_dir.resolve())}
            run = self.client.create_run(_experiment_id(self.client), run_name=run_dir.name, tags=tags)
            self.run_id = run.info.run_id
            write_json(run_dir / TRACKING_FILE, {"run_id": self.run_id, "tracking_uri": self.uri})
            _log_params(self.client, self.run_id, config)
        log.info("Logging to MLflow run %s at %s.", self.run_id, self.uri)

    def log_epoch(self, record: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(name, float(record[name]), now, record["epoch"]) for name in EPOCH_METRICS]
        with self._errors_named():
            self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, run_dir: Path, stopped: BaseException | None = None) -> None:
        if self.run_id is None:  # stopped before `start`
            return
        if stopped is None:
            with self._errors_named():
                self._log_files(run_dir)
                self.client.set_terminated(self.run_id, "FINISHED")
            return
        # TrainingInterrupted (exit code 130) is Ctrl-C seen by the loop; keep its own error the one raised.
        interrupted = isinstance(stopped, KeyboardInterrupt) or getattr(stopped, "exit_code", None) == 130
        try:
            self._log_files(run_dir)
            self.client.set_terminated(self.run_id, "KILLED" if interrupted else "FAILED")
        except Exception as error:  # MLflow raises its own error types, and those of its store
            log.warning("Could not close MLflow run %s: %s", self.run_id, error)

    def _log_files(self, run_dir: Path) -> None:
        for name, folder in ARTIFACTS.items():
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name), folder or None)

    @contextlib.contextmanager
    def _errors_named(self) -> Iterator[None]:
        """Turn MLflow's errors (a store it cannot reach, or one whose packages are missing) into a one-line
        `TrackingError`."""
        from mlflow.exceptions import MlflowException

        try:
            yield
        except (MlflowException, ImportError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise TrackingError(
                f"Logging to MLflow at {self.uri} failed ({reason}). Received: --track=mlflow. Check "
                "MLFLOW_TRACKING_URI and that imgclf[mlflow] is installed, or train with --track none; the run "
                "directory keeps every epoch."
            ) from None


def _read_tracking_file(run_dir: Path) -> dict | None:
    """The MLflow run a resumed run logged to (its `mlflow.json`), or None for a run not tracked yet."""
    path = run_dir / TRACKING_FILE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        saved = None
    if not isinstance(saved, dict) or not all(isinstance(saved.get(key), str) for key in ("run_id", "tracking_uri")):
        raise TrackingError(
            f"{path} does not name an MLflow run. Restore it, or delete it to log the rest of the run to a new "
            "MLflow run."
        )
    return saved


def _check_run_exists(client: MlflowClient, run_id: str, run_dir: Path, uri: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException:
        raise TrackingError(
            f"{run_dir / TRACKING_FILE} names MLflow run {run_id}, which the store at {uri} does not hold. "
            f"Received: MLFLOW_TRACKING_URI={os.environ.get('MLFLOW_TRACKING_URI', '(unset)')}. Set it to the "
            f"store the run logged to, or delete {TRACKING_FILE} to log the rest to a new MLflow run."
        ) from None


def _default_uri() -> str:
    """$MLFLOW_TRACKING_URI, else `mlflow.set_tracking_uri`'s, else MLflow's default, with a local path absolute."""
    import mlflow

    return _absolute_uri(mlflow.get_tracking_uri())


def _absolute_uri(uri: str) -> str:
    """`uri` with a local store's relative path made absolute, so that a resume from another folder finds it."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    if "://" not in uri and not uri.startswith("file:") and uri not in ("databricks", "databricks-uc"):
        return Path(uri).resolve().as_uri()  # a plain folder: MLflow's file store
    return uri


def _experiment_id(client: MlflowClient) -> str:
    """The id of `$MLFLOW_EXPERIMENT_NAME`'s experiment (made if new), else of MLflow's `Default` one."""
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "Default"
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment is not None else client.create_experiment(name)


def _log_params(client: MlflowClient, run_id: str, config: TrainConfig) -> None:
    """The options as MLflow params, the augmentation's flattened (`augment.zoom`)."""
    from mlflow.entities import Param

    params = [Param(name, str(value)) for name, value in sorted(config.to_flat_dict().items())]
    client.log_batch(run_id, params=params)
