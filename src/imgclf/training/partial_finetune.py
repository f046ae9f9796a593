"""Fine-tuning the last stages of `--preset best`'s chosen backbone on cached activations, while the time limit lasts.

imgclf train data/training_set --val-split 0.2 --preset best --time-limit 5m

The frozen stages run once per image, through the feature cache as the preset's pooled features do (each image
decoded once, OpenVINO or folded BatchNorms, cached on disk): their activations are what the last stages see. Only
those stages, the last convolution, its BatchNorm and the head then train, a few epochs on the cached activations
(mirrored at random), which costs a fraction of training the whole network on the photos. Each epoch is scored on
the validation images and the best kept; the fine-tuned member replaces the frozen one only when the whole model
scores higher on those images than without it: fine-tuning every block of Lite0 on 245 photos for 3 epochs once
lowered validation accuracy from 96% to 92% (issue 17), and a recipe has to know when not to.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from imgclf.config import Preprocessing
from imgclf.data.folders import FolderIndex
from imgclf.evaluation import metrics
from imgclf.evaluation.calibration import fit_temperature
from imgclf.models import to_probabilities
from imgclf.models.ensemble import POOLED, Member
from imgclf.runs import RunError
from imgclf.training.budget import Deadline
from imgclf.training.features import FeatureCache, backbone_key, cache_root, extract_features
from imgclf.training.linear_heads import Views

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FineTuning:
    """How the last stages train: how many of the backbone's stages, epochs, AdamW's learning rates (stages,
    head; one-cycle schedule), weight decay, label smoothing and batch size."""

    stages: int = 1
    epochs: int = 4
    lr: float = 3e-4
    head_lr: float = 1e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    batch_size: int = 32


@dataclass
class Activations:
    """What the frozen stages give for a set of images: plain, mirrored (validation only), and the labels."""

    plain: torch.Tensor
    mirrored: torch.Tensor | None
    labels: torch.Tensor


@dataclass
class Outcome:
    """What fine-tuning did, for `config.json`'s recipe; `val` holds the kept member's pooled validation
    features (plain and mirrored), which the preset's calibration reads."""

    record: dict
    val: Views | None = None


def split_stages(member: Member, stages: int) -> tuple[nn.Module, nn.Module, list[str]]:
    """(the frozen start, the last `stages` stages with the last convolution and its BatchNorm, their names) of an
    EfficientNet-Lite member; the modules are the member's own, so training them trains the member."""
    network = member.unflipped.backbone.network
    first = len(network.blocks) - stages
    frozen = nn.Sequential(network.conv_stem, network.bn1, *network.blocks[:first])
    tuned = nn.Sequential(*network.blocks[first:], network.conv_head, network.bn2)
    names = [f"blocks.{number}" for number in range(first, len(network.blocks))] + ["conv_head", "bn2"]
    return frozen, tuned, names


def cached_activations(
    name: str,
    extractor: nn.Module,
    index: FolderIndex,
    preprocessing: Preprocessing,
    precision: torch.dtype | None,
    batch_size: int,
) -> torch.Tensor:
    """`extractor`'s activations of every file of `index` (bf16), through the feature cache under its own key."""
    cache = FeatureCache(cache_root() / backbone_key(name, "pretrained", preprocessing, extractor, precision))
    found, kept, skipped, _ = extract_features(
        extractor, index.files, preprocessing, cache, batch_size, torch.device("cpu"), precision
    )
    if skipped:
        raise RunError(f"{skipped[0].path} became unreadable during training ({skipped[0].reason}).")
    return found.to(torch.bfloat16)


def member_activations(
    member: Member,
    name: str,
    frozen: nn.Module,
    indexes: tuple[FolderIndex, FolderIndex],
    preprocessing: Preprocessing,
    precision: torch.dtype | None,
) -> tuple[Activations, Activations]:
    """The frozen stages' activations of the training images and of the validation images and their mirrors."""
    plain = nn.Sequential(member.resized, frozen).eval()
    mirrored = nn.Sequential(member.resized, member.mirrored, frozen).eval()
    train, val = indexes
    labels = [torch.tensor(index.labels, dtype=torch.long) for index in indexes]
    extract = dict(name=name, preprocessing=preprocessing, precision=precision, batch_size=32)
    return (
        Activations(cached_activations(extractor=plain, index=train, **extract), None, labels[0]),
        Activations(
            cached_activations(extractor=plain, index=val, **extract),
            cached_activations(extractor=mirrored, index=val, **extract),
            labels[1],
        ),
    )


def _loss(logits: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    if logits.shape[1] == 1:
        targets = labels.float() * (1 - smoothing) + smoothing / 2
        return F.binary_cross_entropy_with_logits(logits[:, 0].float(), targets)
    return F.cross_entropy(logits.float(), labels, label_smoothing=smoothing)


def train_epoch(
    model: nn.Module,
    train: Activations,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    settings: FineTuning,
    generator: torch.Generator,
) -> None:
    """One pass over the training activations in a seeded order, half of each batch's maps mirrored."""
    model.train()
    order = torch.randperm(len(train.labels), generator=generator)
    for start in range(0, len(order), settings.batch_size):
        rows = order[start : start + settings.batch_size]
        if len(rows) < 2:  # BatchNorm cannot train on one image
            continue
        batch = train.plain[rows].float()
        flip = torch.rand(len(rows), generator=generator) < 0.5
        batch = torch.where(flip[:, None, None, None], batch.flip(3), batch)
        loss = _loss(model(batch), train.labels[rows], settings.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()


@torch.inference_mode()
def pooled_features(tuned: nn.Module, member: Member, activations: torch.Tensor) -> torch.Tensor:
    """The member's pooled features (N, C) of frozen-stage `activations`, through the `tuned` stages."""
    pool = member.head[:POOLED].eval()
    tuned.eval()
    return torch.cat([pool(tuned(activations[s : s + 64].float())) for s in range(0, len(activations), 64)])


EPOCH_SHARE = 0.5
"""An epoch's time against the activation pass's, guessed before the first epoch is timed."""


@dataclass
class Scoring:
    """How the fine-tuned member is judged: with the other members' calibrated validation probabilities, flip
    test-time augmentation or not, against the validation labels and the whole model's accuracy without it."""

    others: list[torch.Tensor]
    flip: bool
    labels: torch.Tensor
    baseline: float

    def score(self, plain: torch.Tensor, mirrored: torch.Tensor) -> tuple[float, float]:
        """(the whole model's validation accuracy, the member's temperature) for the member's validation logits."""
        temperature = fit_temperature(plain, self.labels)
        probabilities = to_probabilities(plain / temperature)
        if self.flip:
            probabilities = (probabilities + to_probabilities(mirrored / temperature)) / 2
        averaged = torch.stack([probabilities, *self.others]).mean(dim=0)
        return metrics.accuracy(self.labels.numpy(), averaged.argmax(dim=1).numpy()), temperature


def fine_tune_member(
    member: Member,
    name: str,
    indexes: tuple[FolderIndex, FolderIndex],
    preprocessing: Preprocessing,
    precision: torch.dtype | None,
    scoring: Scoring,
    deadline: Deadline,
    expected_pass_seconds: float,
    settings: FineTuning = FineTuning(),
) -> Outcome:
    """Fine-tune `member`'s last stages in place while `deadline` allows (`expected_pass_seconds`: about how long
    its activation pass takes), keeping the best epoch; the member is left as it was unless that epoch makes the
    whole model score higher than `scoring.baseline` on the validation images."""
    record = {"model": name, **dataclasses.asdict(settings), "baseline_accuracy": round(scoring.baseline, 6)}
    needed = expected_pass_seconds * (1 + EPOCH_SHARE)
    if not deadline.fits(needed):
        return _left_as_is(
            record,
            f"the activations and an epoch would take about {needed:.0f} s; {max(deadline.left(), 0):.0f} s are left",
            [],
        )
    started = time.perf_counter()
    frozen, tuned, record["trained"] = split_stages(member, settings.stages)
    train, val = member_activations(member, name, frozen, indexes, preprocessing, precision)
    record["activation_seconds"] = round(time.perf_counter() - started, 2)
    model = nn.Sequential(tuned, member.head)
    original = _state(model)
    epochs = _epochs(model, member, train, val, scoring, deadline, settings, record["activation_seconds"])
    model.eval()
    best = max(epochs, key=lambda epoch: epoch["accuracy"], default=None)
    if best is None or best["accuracy"] <= record["baseline_accuracy"]:  # both rounded: 108/109 against 108/109
        model.load_state_dict(original)
        why = "no epoch raised the validation accuracy" if epochs else "no epoch fitted in the time left"
        return _left_as_is(record, why, epochs)
    state, temperature = best.pop("state")
    model.load_state_dict(state)
    with torch.no_grad():
        member.temperature.fill_(temperature)
    record.update(kept=True, best_epoch=best["epoch"], epochs=[_without_state(epoch) for epoch in epochs])
    record["why"] = (
        f"epoch {best['epoch']} raised the validation accuracy from {scoring.baseline:.4f} to {best['accuracy']:.4f}"
    )
    log.info("Fine-tuned %s (%s): %s.", name, ", ".join(record["trained"]), record["why"])
    pooled = Views(pooled_features(tuned, member, val.plain), pooled_features(tuned, member, val.mirrored), val.labels)
    return Outcome(record, pooled)


def _left_as_is(record: dict, why: str, epochs: list[dict]) -> Outcome:
    record.update(kept=False, epochs=[_without_state(epoch) for epoch in epochs], why=why)
    log.info("%s left as it was, not fine-tuned: %s.", record["model"], why)
    return Outcome(record)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def _without_state(epoch: dict) -> dict:
    return {key: value for key, value in epoch.items() if key != "state"}


def _epochs(
    model: nn.Module,
    member: Member,
    train: Activations,
    val: Activations,
    scoring: Scoring,
    deadline: Deadline,
    settings: FineTuning,
    pass_seconds: float,
) -> list[dict]:
    """Each epoch that fits the deadline: its validation accuracy, the member's temperature, its seconds, and its
    weights with the exact temperature (`state`, kept only for the best so far)."""
    tuned, dense = model[0], member.dense
    groups = [
        {"params": list(tuned.parameters()), "lr": settings.lr},
        {"params": list(dense.parameters()), "lr": settings.head_lr},
    ]
    optimizer = torch.optim.AdamW(groups, weight_decay=settings.weight_decay)
    steps = settings.epochs * math.ceil(len(train.labels) / settings.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, [settings.lr, settings.head_lr], total_steps=steps)
    generator = torch.Generator().manual_seed(0)
    epochs, expected = [], pass_seconds * EPOCH_SHARE
    for number in range(1, settings.epochs + 1):
        if not deadline.fits(expected):
            log.info(
                "Time limit: fine-tuning stops before epoch %d (about %.0f s; %.0f s left).",
                number,
                expected,
                max(deadline.left(), 0),
            )
            break
        started = time.perf_counter()
        train_epoch(model, train, optimizer, schedule, settings, generator)
        with torch.no_grad():
            plain, mirrored = (
                dense(pooled_features(tuned, member, maps)).float() for maps in (val.plain, val.mirrored)
            )
        accuracy, temperature = scoring.score(plain, mirrored)
        expected = time.perf_counter() - started
        epoch = {
            "epoch": number,
            "accuracy": round(accuracy, 6),
            "temperature": round(temperature, 4),
            "seconds": round(expected, 2),
        }
        log.info("Fine-tuning epoch %d: validation accuracy %.4f (%.1f s).", number, accuracy, expected)
        if all(accuracy > earlier["accuracy"] for earlier in epochs):
            for earlier in epochs:
                earlier.pop("state", None)
            epoch["state"] = (_state(model), temperature)
        epochs.append(epoch)
    return epochs
