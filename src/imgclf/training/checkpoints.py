"""A run's `checkpoint/` folder: what every epoch saves so that `--resume` continues where training stopped.

checkpoint/state.json               the epoch, its phase, the best val_loss so far, the epochs since it improved,
                                    the history, and the gradient scaler's and optimiser's scalars
checkpoint/last.safetensors         the weights and buffers the epoch's phase changes (all of them from scratch)
checkpoint/optimizer.safetensors    the optimiser's tensors (Adam's moments, ...)
checkpoint/start.safetensors        the whole model at the start of a phase that keeps part of it frozen
checkpoint/best.safetensors         the best epoch's changes in such a phase, until `complete_best` keeps them whole
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from imgclf.files import save_tensors, write_json
from imgclf.runs import CHECKPOINT_DIR, WEIGHTS_FILE, RunError, load_tensors
from imgclf.training.phases import Phase


@dataclass
class TrainingProgress:
    """How far training has come, as `state.json` keeps it: the last epoch, the history, the best val_loss.

    Every epoch counted has finite losses: training stops at the first that is not (see `loop.train_epoch`).
    """

    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best_val_loss: float = float("inf")
    epochs_without_improvement: int = 0

    @classmethod
    def from_state(cls, state: dict) -> TrainingProgress:
        """The progress saved in a `state.json` (see `read_state`)."""
        return cls(state["epoch"], state["history"], state["best_val_loss"], state["epochs_without_improvement"])

    def add(self, record: dict) -> bool:
        """Count a finished epoch's `record` (a row of `history.csv`); True when its weights are the best yet."""
        self.history.append(record)
        self.epoch = record["epoch"]
        if record["val_loss"] < self.best_val_loss:
            self.best_val_loss, self.epochs_without_improvement = record["val_loss"], 0
            return True
        self.epochs_without_improvement += 1
        return False

    def stalled(self, patience: int | None) -> bool:
        """Whether val_loss has not improved for `patience` epochs (`--patience`; None: never stop early)."""
        return patience is not None and self.epochs_without_improvement >= patience

    def state(self, phase: Phase, scaler: torch.amp.GradScaler) -> dict:
        """What `state.json` saves of this progress, in `phase`, besides the optimiser."""
        return {
            "epoch": self.epoch,
            "phase": phase.kind.value,
            "best_val_loss": self.best_val_loss,
            "epochs_without_improvement": self.epochs_without_improvement,
            "history": self.history,
            "gradient_scaler": scaler.state_dict(),
        }


def read_state(run_dir: Path) -> dict:
    """The `state.json` of `run_dir`'s last saved epoch; raises `RunError` when there is none or it is damaged."""
    path = run_dir / CHECKPOINT_DIR / "state.json"
    if not path.is_file():
        raise RunError(f"{run_dir} has no {CHECKPOINT_DIR}/state.json to resume from.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise RunError(f"{path} is damaged ({error}); the run cannot be resumed from it.") from None


def has_saved_epoch(run_dir: Path) -> bool:
    """Whether `run_dir` holds weights from at least one finished epoch."""
    return (run_dir / WEIGHTS_FILE).exists() or (run_dir / CHECKPOINT_DIR / "state.json").exists()


def changing_state(model: nn.Module, phase: Phase) -> dict[str, torch.Tensor]:
    """The weights and buffers a phase can change: all of them from scratch; with a backbone, the trainable
    parameters and the head's buffers (the backbone's BatchNorm statistics stay frozen in both its phases)."""
    state = model.state_dict()
    if phase.trains_whole_model:
        return state
    frozen = {f"backbone.{name}" for name, _ in model.backbone.named_buffers()}
    frozen |= {name for name, parameter in model.named_parameters() if not parameter.requires_grad}
    return {name: tensor for name, tensor in state.items() if name not in frozen}


def save_checkpoint(
    run_dir: Path, model: nn.Module, phase: Phase, optimizer: torch.optim.Optimizer, state: dict
) -> None:
    """Save an epoch: what `phase` changes of `model`, the optimiser, and `state` (see `TrainingProgress.state`)."""
    checkpoint = run_dir / CHECKPOINT_DIR
    tensors, meta = _optimizer_tensors(optimizer)
    save_tensors(checkpoint / "last.safetensors", changing_state(model, phase))
    save_tensors(checkpoint / "optimizer.safetensors", tensors)
    write_json(checkpoint / "state.json", {**state, "optimizer": meta})


def load_last_epoch(run_dir: Path) -> dict[str, torch.Tensor]:
    """The last saved epoch's whole state: its phase's start, overlaid with what the epoch changed."""
    checkpoint = run_dir / CHECKPOINT_DIR
    start = checkpoint / "start.safetensors"
    return {**(load_tensors(start) if start.is_file() else {}), **load_tensors(checkpoint / "last.safetensors")}


def restore_optimizer(
    run_dir: Path, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, state: dict
) -> None:
    """Give `optimizer` and `scaler` the state they had at the last saved epoch (`state`: its `state.json`)."""
    tensors, meta = load_tensors(run_dir / CHECKPOINT_DIR / "optimizer.safetensors"), state["optimizer"]
    saved: dict[int, dict] = {}
    for name, value in [*tensors.items(), *meta["scalars"].items()]:
        param_id, key = name.split(".", 1)
        saved.setdefault(int(param_id), {})[key] = value
    optimizer.load_state_dict({"state": saved, "param_groups": meta["param_groups"]})
    for parameter, parameter_state in optimizer.state.items():
        for key, value in parameter_state.items():
            if torch.is_tensor(value) and value.shape == parameter.shape and value.stride() != parameter.stride():
                # Saved contiguous, while conv weights are channels-last: `empty_like` takes the weight's strides.
                parameter_state[key] = torch.empty_like(parameter, dtype=value.dtype).copy_(value)
    if state.get("gradient_scaler"):
        scaler.load_state_dict(state["gradient_scaler"])


def has_phase_start(run_dir: Path) -> bool:
    """Whether the start of the phase being trained is saved (see `save_phase_start`)."""
    return (run_dir / CHECKPOINT_DIR / "start.safetensors").is_file()


def save_phase_start(run_dir: Path, model: nn.Module, phase: Phase) -> None:
    """The whole model once at the start of a phase that freezes part of it; epochs then save only the rest."""
    if not phase.trains_whole_model:
        save_tensors(run_dir / CHECKPOINT_DIR / "start.safetensors", model.state_dict())


def save_best(run_dir: Path, model: nn.Module, phase: Phase) -> None:
    """Keep the best epoch: the whole model from scratch; in a backbone phase only what the phase changes,
    which `complete_best` completes into `model.safetensors` when the phase ends."""
    if phase.trains_whole_model:
        save_tensors(run_dir / WEIGHTS_FILE, model.state_dict())
    else:
        save_tensors(run_dir / CHECKPOINT_DIR / "best.safetensors", changing_state(model, phase))


def complete_best(run_dir: Path) -> None:
    """Write `model.safetensors` from the phase's start and its best epoch's changes, if not done yet."""
    checkpoint = run_dir / CHECKPOINT_DIR
    best = checkpoint / "best.safetensors"
    if best.is_file():
        save_tensors(run_dir / WEIGHTS_FILE, {**load_tensors(checkpoint / "start.safetensors"), **load_tensors(best)})
        best.unlink()


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """The optimiser's state as tensors for safetensors, named `<parameter id>.<key>`, and the rest for JSON."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for param_id, param_state in state["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"{param_id}.{key}"] = value
            else:
                scalars[f"{param_id}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}
