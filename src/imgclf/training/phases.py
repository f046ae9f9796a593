"""The phases of a run: which epochs train what, and what each phase trains with.

A model trained from scratch has one phase that trains every layer. A pretrained backbone has a head phase, with
the backbone frozen, and with `--fine-tune N` a fine-tuning phase that also trains the backbone's last N blocks at a
lower learning rate (fastai's `fine_tune`). Each phase has its own optimiser.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum

import torch
from torch import nn

from imgclf.config import TrainConfig
from imgclf.devices import gradient_scaler
from imgclf.training.sources import (
    TrainingInputs,
    feature_sources,
    frozen_backbone,
    image_sources,
    split_frozen,
)
from imgclf.training.steps import (
    Source,
    Step,
    class_weights,
    freeze_batchnorm,
    make_optimizer,
    set_trainable_blocks,
)


class PhaseKind(Enum):
    """What a phase trains. The value names the phase in `checkpoint/state.json`."""

    TRAIN = "train"
    """Every layer, from scratch."""
    HEAD = "head"
    """The head, on a frozen backbone."""
    FINE_TUNE = "fine-tune"
    """The head and the backbone's last `--fine-tune` blocks."""


@dataclass(frozen=True)
class Phase:
    """A stretch of epochs, `first_epoch` to `last_epoch`, that trains one part of the model with one optimiser."""

    kind: PhaseKind
    first_epoch: int
    last_epoch: int

    @property
    def trains_whole_model(self) -> bool:
        """Whether every weight can change (from scratch); else part of the backbone stays as pretrained."""
        return self.kind is PhaseKind.TRAIN

    def learning_rate(self, config: TrainConfig) -> float:
        """`--lr`, or to fine-tune `--fine-tune-lr` (default a tenth of `--lr`)."""
        if self.kind is PhaseKind.FINE_TUNE:
            return config.fine_tune_lr or config.lr / 10
        return config.lr

    def freeze(self, model: nn.Module, config: TrainConfig) -> None:
        """Freeze what the phase keeps fixed: the whole backbone for the head, all but its last blocks to fine-tune."""
        if self.kind is PhaseKind.HEAD:
            set_trainable_blocks(model, None)
        elif self.kind is PhaseKind.FINE_TUNE:
            set_trainable_blocks(model, config.fine_tune)

    def set_training_mode(self, model: nn.Module) -> None:
        """`model.train()`, but with a frozen backbone, or the BatchNorm statistics of one, left in eval mode."""
        model.train()
        if self.kind is PhaseKind.HEAD:
            model.backbone.eval()
        elif self.kind is PhaseKind.FINE_TUNE:
            freeze_batchnorm(model)


def plan_phases(config: TrainConfig, backbone: bool) -> list[Phase]:
    """One phase for a model trained from scratch; head training, then optional fine-tuning, for a backbone."""
    if not backbone:
        return [Phase(PhaseKind.TRAIN, 1, config.epochs)]
    phases = [Phase(PhaseKind.HEAD, 1, config.epochs)]
    if config.fine_tune is not None:
        phases.append(Phase(PhaseKind.FINE_TUNE, config.epochs + 1, config.epochs + config.fine_tune_epochs))
    return phases


@dataclass
class PhaseSetup:
    """What a phase trains with: how batches reach the model, where they come from, and the optimiser.

    `model` is what the phase runs: the whole model, or the trainable end of its head on cached features.
    `train_model` is what a training step calls: `model`, or in several processes `model` wrapped in
    DistributedDataParallel (which averages the gradients); evaluation calls `model` itself.
    """

    step: Step
    train: Source
    val: Source
    optimizer: torch.optim.Optimizer
    model: nn.Module
    train_model: nn.Module
    scaler: torch.amp.GradScaler
    loss_weights: torch.Tensor | None
    """Each class's weight in the loss (`--class-weight auto`), else None."""


def setup_phase(phase: Phase, model: nn.Module, inputs: TrainingInputs, previous: PhaseSetup | None) -> PhaseSetup:
    """Freeze what the phase keeps fixed, pick features or images, and make the phase's optimiser.

    The head trains on cached features when nothing is augmented (unless `--no-feature-cache`). `previous`, the
    set-up of the phase before this one in the same call, lends its images when it had them.
    """
    config, processes, device = inputs.config, inputs.processes, inputs.processes.device
    phase.freeze(model, config)
    optimizer = make_optimizer(config.optimizer, model.parameters(), phase.learning_rate(config))
    if phase.kind is PhaseKind.HEAD and config.augment.is_identity and config.feature_cache:
        extractor, trained = split_frozen(model)
        train, val = feature_sources(inputs, extractor)
        step = Step(device, None, False, inputs.preprocessing, config.augment, features=True)
        scaler = gradient_scaler(device, None)
    else:
        reuse = previous is not None and not previous.train.holds_features
        train, val = (previous.train, previous.val) if reuse else image_sources(inputs)
        step = Step(device, inputs.precision, device.type == "cpu", inputs.preprocessing, config.augment)
        scaler = gradient_scaler(device, inputs.precision)
        trained = model
        if phase.kind is PhaseKind.HEAD:
            extractor, head = split_frozen(model)
            frozen = frozen_backbone(inputs, extractor, len(train))
            if frozen is not None:
                step, trained = dataclasses.replace(step, frozen=frozen), head
    step.multi_label = config.multi_label
    weights = class_weights(train.labels, len(inputs.class_names)).to(device) if config.class_weight == "auto" else None
    return PhaseSetup(step, train, val, optimizer, trained, processes.wrap(trained), scaler, weights)
