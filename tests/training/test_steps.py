"""Losses and class weights."""

from __future__ import annotations

import functools

import pytest
import torch
from tests.conftest import make_synthetic_classes, read_history

import imgclf
from imgclf.training.steps import class_weights, compute_loss, hits

train_cnn = functools.partial(imgclf.train, model="seed-cnn")


def test_many_classes_train_with_softmax_and_class_weights(tmp_path):
    data = make_synthetic_classes(tmp_path / "data", {"red": 20, "green": 20, "blue": 5})
    run = train_cnn(
        data,
        val_split=0.2,
        out=str(tmp_path / "run"),
        epochs=8,
        batch_size=8,
        image_size=24,
        class_weight="auto",
        seed=0,
    )
    assert run.model(torch.zeros(1, 3, 24, 24)).shape == (1, 3)
    assert float(read_history(run.run_dir)[-1]["val_accuracy"]) == 1.0


def test_class_weights_balance_the_classes():
    weights = class_weights([0, 0, 0, 1], 2)
    assert torch.allclose(weights, torch.tensor([4 / 6, 2.0]))


def test_loss_is_binary_cross_entropy_for_one_logit():
    logits, labels = torch.tensor([[0.0], [2.0]]), torch.tensor([1, 0])
    expected = (torch.log(torch.tensor(2.0)) + torch.log1p(torch.exp(torch.tensor(2.0)))) / 2
    assert torch.isclose(compute_loss(logits, labels, None), expected)


def test_multi_label_loss_is_binary_cross_entropy_on_the_label_bits():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 1.0, -0.5]])
    labels = torch.tensor([0b101, 0b010])  # {0, 2} and {1}
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    )

    assert torch.allclose(compute_loss(logits, labels, None, multi_label=True), expected)
    assert hits(logits, labels, multi_label=True) == 2.0  # every label on the right side of 0
    assert hits(torch.tensor([[2.0, 1.0, -0.5]]), torch.tensor([0b101]), multi_label=True) == pytest.approx(1 / 3)
