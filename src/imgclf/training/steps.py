"""The steps of training and validation: how a batch reaches the model, the loss, the optimiser, the scores.

Training calls `Step.forward` on every batch with an augmentation generator, `compute_loss` on its logits, and the
optimiser from `make_optimizer`; validation calls `evaluate`, and the finished run `calibrate`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imgclf.config import AugmentConfig, Preprocessing
from imgclf.data import loading
from imgclf.data.augment import augment
from imgclf.data.images import normalize
from imgclf.evaluation import metrics
from imgclf.evaluation.calibration import calibrated_probabilities, fit_temperature
from imgclf.models import to_probabilities
from imgclf.training.distributed import SINGLE_PROCESS, Processes
from imgclf.training.features import FeatureSource
from imgclf.training.frozen import Backbone

Source = loading.BatchSource | FeatureSource
"""Where batches come from: images (decoded or streamed) or a frozen backbone's cached features."""


@dataclass
class Step:
    """How every batch reaches the model: augmented and normalised images, or cached features for the head.

    `frozen`, when set, runs the frozen start of the model on the images (on another engine, see `frozen.py`)
    and `model` is then the head's trainable end.
    """

    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool
    preprocessing: Preprocessing
    augment: AugmentConfig
    features: bool = False
    frozen: Backbone | None = None
    multi_label: bool = False
    """Labels are bit masks of classes (`folders.label_set`): one sigmoid per class, binary cross-entropy."""

    def forward(self, model: nn.Module, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Logits of `model` for a batch (of features: `model` is then the head's trainable end).

        `generator` (training only) draws the augmentation.
        """
        batch = batch.to(self.device, non_blocking=True)
        if self.features:
            return model(batch).float()
        inputs = augment(batch, self.augment, generator) if generator is not None else batch
        inputs = normalize(inputs, self.preprocessing)
        if self.frozen is not None:
            return model(self.frozen(inputs)).float()
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(
            self.device.type, dtype=self.autocast_dtype or torch.float32, enabled=self.autocast_dtype is not None
        ):
            return model(inputs).float()


def make_optimizer(name: str, parameters: Iterable[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """Adam, RMSprop (Keras's rho = 0.9 and epsilon = 1e-7) or SGD with momentum 0.9, for the trainable `parameters`."""
    parameters = [p for p in parameters if p.requires_grad]
    # On a CPU the default updates one tensor at a time: 3.7 ms an Adam step for the seed-cnn against 1.1 ms.
    if name == "adam":
        # Fused: 0.3 ms. Its kernel ignores strides, so `restore_optimizer` lays restored moments out as their weights.
        return torch.optim.Adam(parameters, lr=lr, eps=1e-7, fused=True)
    if name == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=lr, alpha=0.9, eps=1e-7, foreach=True)
    return torch.optim.SGD(parameters, lr=lr, momentum=0.9, foreach=True)


def class_weights(labels: list[int], num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, `total / (classes × count)`, so every class weighs the same in the loss."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return torch.tensor(len(labels) / (num_classes * np.maximum(counts, 1)), dtype=torch.float32)


def compute_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None, multi_label: bool = False
) -> torch.Tensor:
    """Binary cross-entropy for one logit, cross-entropy otherwise; per-class weights scale each sample.

    `multi_label`: binary cross-entropy of each class's logit against whether the image's bit mask holds it.
    """
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits, label_sets(labels, logits.shape[1]))
    if logits.shape[1] == 1:
        per_sample = F.binary_cross_entropy_with_logits(logits[:, 0], labels.float(), reduction="none")
    else:
        per_sample = F.cross_entropy(logits, labels, reduction="none")
    if weights is not None:
        per_sample = per_sample * weights[labels]
    return per_sample.mean()


def label_sets(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Multi-label bit masks (N,) as 0/1 floats (N, classes): column c is 1 where bit c is set."""
    bits = torch.arange(classes, device=labels.device)
    return ((labels[:, None] >> bits) & 1).float()


def hits(logits: torch.Tensor, labels: torch.Tensor, multi_label: bool = False) -> float:
    """How many images are right: the predicted class is the label, or in multi-label data the share of each
    image's classes whose logit is on the right side of 0 (Keras's binary accuracy: 1 − Hamming loss)."""
    if multi_label:
        right = (logits > 0) == label_sets(labels, logits.shape[1]).bool()
        return float(right.float().mean(dim=1).sum())
    return int((predicted_labels(logits) == labels).sum())


def predicted_labels(logits: torch.Tensor) -> torch.Tensor:
    """Class indices: logit > 0 for one logit (probability > 0.5), else the arg-max."""
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(dim=1)


def set_trainable_blocks(model: nn.Module, blocks: str | None) -> None:
    """Freeze a backbone model's backbone except its last `blocks` stages (`all`: nothing frozen, None: all)."""
    for parameter in model.backbone.parameters():
        parameter.requires_grad = blocks == "all"
    if blocks is not None and blocks != "all":
        for block in model.blocks[-int(blocks) :]:
            for parameter in block.parameters():
                parameter.requires_grad = True


def freeze_batchnorm(model: nn.Module) -> None:
    """Keep the backbone's BatchNorm statistics as pretrained: small batches would only make them noisy."""
    for module in model.backbone.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


@torch.inference_mode()
def predict_logits(
    model: nn.Module, source: Source, step: Step, plan: list[list[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of the images of `source` that `plan`'s batches list, in order (on the CPU)."""
    model.eval()
    logits, labels = [], []
    for batch, batch_labels in source.batches(plan):
        if len(batch_labels) == 0:  # streaming found every image of the batch unreadable
            continue
        logits.append(step.forward(model, batch).cpu())
        labels.append(batch_labels)
    if not logits:
        return torch.empty((0, 1)), torch.empty(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(labels)


def evaluate(
    model: nn.Module, source: Source, step: Step, batch_size: int, processes: Processes = SINGLE_PROCESS
) -> tuple[float, float]:
    """Mean loss and accuracy over every image of `source`, each seen once.

    In several processes each scores every `world_size`-th batch, and the sums of loss, hits and images are
    added up over the processes: all of them get the same numbers.
    """
    plan = processes.take_turns(loading.sequential_batches(len(source), batch_size))
    logits, labels = predict_logits(model, source, step, plan)
    loss_sum = float(compute_loss(logits, labels, None, step.multi_label)) * len(labels) if len(labels) else 0.0
    correct = hits(logits, labels, step.multi_label)
    loss_sum, correct, count = processes.sum(loss_sum, correct, len(labels))
    return (loss_sum / count, correct / count) if count else (0.0, 0.0)


def calibrate(model: nn.Module, source: Source, step: Step, batch_size: int) -> dict:
    """Fit the temperature on the validation images; with the log-loss and ECE before and after."""
    logits, labels = predict_logits(model, source, step, loading.sequential_batches(len(source), batch_size))
    return calibration_of(logits, labels)


def calibration_of(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """The temperature fitted to validation `logits` and `labels`, with the log-loss and ECE before and after."""
    temperature = fit_temperature(logits, labels)
    before, after = to_probabilities(logits).numpy(), calibrated_probabilities(logits, temperature).numpy()
    return {
        "temperature": temperature,
        "images": len(labels),
        "val_log_loss_before": metrics.log_loss(labels.numpy(), before) if len(labels) else None,
        "val_log_loss_after": metrics.log_loss(labels.numpy(), after) if len(labels) else None,
        "val_ece_before": metrics.reliability(labels.numpy(), before)["ece"] if len(labels) else None,
        "val_ece_after": metrics.reliability(labels.numpy(), after)["ece"] if len(labels) else None,
    }
