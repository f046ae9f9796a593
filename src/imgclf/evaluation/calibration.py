"""Temperature scaling: one number, fitted on the validation set, that makes probabilities mean what they say.

Dividing the logits by a temperature T > 0 never changes which class wins; it only softens (T > 1) or sharpens
(T < 1) the probabilities. T is chosen to minimise the validation log-loss (Guo et al., 2017).
"""

from __future__ import annotations

import math

import torch

from imgclf.models import to_probabilities
from imgclf.runs import MAX_TEMPERATURE, MIN_TEMPERATURE


def _nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if logits.shape[1] == 1:
        return torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], labels.float())
    return torch.nn.functional.cross_entropy(logits, labels)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature minimising the log-loss of `logits` (N, outputs) against `labels` (N,).

    One output means a sigmoid (two classes); more, a softmax. Returns 1.0 when there is nothing to fit: no
    images, or every image classified right (then the log-loss only falls as T falls towards 0, which would make
    every future prediction look certain).
    """
    # Copies: the tensors may come from inference mode, which autograd refuses to save for backward.
    logits, labels = logits.detach().double().clone(), labels.detach().long().clone()
    predicted = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(dim=1)
    if len(labels) == 0 or bool((predicted == labels).all()):
        return 1.0
    log_temperature = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_temperature], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = _nll(logits / log_temperature.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_temperature.detach().exp())
    if not math.isfinite(temperature):
        return 1.0
    return min(max(temperature, MIN_TEMPERATURE), MAX_TEMPERATURE)


def calibrated_probabilities(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Class probabilities (N, classes) of `logits` divided by `temperature`."""
    return to_probabilities(logits / temperature)
