"""Dense heads fitted on a frozen backbone's pooled features in one go (L2-regularised logistic regression), and
their held-out logits: what `--preset balanced|best` scores backbones with.

On cached features a head fits in well under a second, so the presets can afford a few strengths of L2 and, on a
small validation set, k-fold cross-validation on the training set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imgclf.evaluation import metrics
from imgclf.models import to_probabilities

log = logging.getLogger(__name__)

L2_STRENGTHS = (3e-4, 3e-3, 3e-2)
"""Penalties on the squared weights of standardised features, per image; the presets keep the best on held-out
images."""
FOLDS = 5


def fit_dense(features: torch.Tensor, labels: torch.Tensor, outputs: int, l2: float) -> nn.Linear:
    """A dense layer (`outputs` logits: one for two classes, a sigmoid) fitted to `features` (N, C) by L-BFGS.

    The features are standardised while fitting and the scaling folded back into the weights, so the layer
    takes the features as the backbone gives them.
    """
    mean, scale = features.mean(dim=0), features.std(dim=0).clamp_min(1e-6)
    standardised = (features - mean) / scale
    weight = torch.zeros(outputs, features.shape[1], requires_grad=True)
    bias = torch.zeros(outputs, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = _loss(standardised @ weight.T + bias, labels) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    dense = nn.Linear(features.shape[1], outputs)
    with torch.no_grad():
        dense.weight.copy_(weight / scale)
        dense.bias.copy_(bias - (weight / scale) @ mean)
    return dense


def _loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], labels.float())
    return F.cross_entropy(logits, labels)


@dataclass
class Views:
    """A set of images as one backbone sees them: pooled features (N, C), of the mirrored images too when
    computed, and the labels (N,)."""

    plain: torch.Tensor
    mirrored: torch.Tensor | None
    labels: torch.Tensor

    def rows(self, indices: list[int]) -> Views:
        index = torch.tensor(indices, dtype=torch.long)
        mirrored = None if self.mirrored is None else self.mirrored[index]
        return Views(self.plain[index], mirrored, self.labels[index])


@dataclass
class HeldOut:
    """Logits of images the head did not train on (plain and mirrored), their labels, and the L2 that won."""

    plain: torch.Tensor
    mirrored: torch.Tensor
    labels: torch.Tensor
    l2: float


def fold_rows(labels: torch.Tensor, folds: int, seed: int) -> list[list[int]]:
    """`folds` lists of row numbers, each class dealt round them in a seeded order (stratified k-fold)."""
    generator = np.random.default_rng(seed)
    dealt: list[list[int]] = [[] for _ in range(folds)]
    position = 0
    for label in sorted(set(labels.tolist())):
        rows = np.flatnonzero(labels.numpy() == label)
        for row in generator.permutation(rows):
            dealt[position % folds].append(int(row))
            position += 1
    return [sorted(rows) for rows in dealt if rows]


def held_out_logits(train: Views, val: Views, outputs: int, cross_validate: bool, seed: int) -> HeldOut:
    """The logits of `val` (and with `cross_validate` of every training image, from the `FOLDS` heads that did
    not see it) under the L2 strength whose held-out log-loss is lowest. `val.mirrored` must be set, and
    `train.mirrored` too when cross-validating."""
    folds = fold_rows(train.labels, FOLDS, seed) if cross_validate else []
    candidates = []
    for l2 in L2_STRENGTHS:
        parts = [_predict(train, val, outputs, l2)]
        for rows in folds:
            held = set(rows)
            others = [row for row in range(len(train.labels)) if row not in held]
            parts.append(_predict(train.rows(others), train.rows(rows), outputs, l2))
        plain, mirrored, labels = (torch.cat([getattr(part, name) for part in parts]) for name in _LOGITS)
        loss = metrics.log_loss(labels.numpy(), to_probabilities(plain).numpy())
        log.debug("L2 %g: held-out log-loss %.4f.", l2, loss)
        candidates.append((loss, HeldOut(plain, mirrored, labels, l2)))
    return min(candidates, key=lambda candidate: candidate[0])[1]


_LOGITS = ("plain", "mirrored", "labels")


def _predict(train: Views, held: Views, outputs: int, l2: float) -> HeldOut:
    dense = fit_dense(train.plain, train.labels, outputs, l2)
    with torch.no_grad():
        return HeldOut(dense(held.plain), dense(held.mirrored), held.labels, l2)
