"""Temperature scaling: fitted on validation logits, it softens an overconfident model and never changes a label."""

from __future__ import annotations

import torch

from imgclf.evaluation import metrics
from imgclf.evaluation.calibration import calibrated_probabilities, fit_temperature


def test_temperature_softens_an_overconfident_model():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (400,), generator=generator)
    # Right 70% of the time but with logits scaled so the top probability is near 1: overconfident.
    logits = torch.randn(400, 3, generator=generator)
    noisy = torch.rand(400, generator=generator) < 0.3
    winners = torch.where(noisy, torch.randint(0, 3, (400,), generator=generator), labels)
    logits[torch.arange(400), winners] += 3.0
    logits *= 4.0
    temperature = fit_temperature(logits, labels)
    assert temperature > 1.5
    before = metrics.reliability(labels.numpy(), torch.softmax(logits, 1).numpy())["ece"]
    after = metrics.reliability(labels.numpy(), calibrated_probabilities(logits, temperature).numpy())["ece"]
    assert after < before / 2
    assert torch.equal(calibrated_probabilities(logits, temperature).argmax(1), logits.argmax(1))


def test_temperature_for_one_logit_and_nothing_to_fit():
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 1, 1])
    logits = torch.tensor([[-0.1], [0.2], [0.1], [0.3], [0.2], [-0.2], [-0.1], [0.3]])  # timid: near 0.5
    assert fit_temperature(logits, labels) < 1.0
    assert fit_temperature(torch.empty((0, 1)), torch.empty(0, dtype=torch.long)) == 1.0
    all_right = torch.tensor([[-2.0], [3.0], [1.0]])
    assert fit_temperature(all_right, torch.tensor([0, 1, 1])) == 1.0  # no finite optimum: left alone
