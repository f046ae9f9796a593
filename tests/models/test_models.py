from __future__ import annotations

import math

import pytest
import torch

from imgclf.config import ConfigError, Preprocessing
from imgclf.models import create_model, list_models, num_outputs, summarize, to_probabilities


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("num_classes", [2, 5])
def test_every_registered_model_builds_and_runs(name, num_classes):
    model = create_model(name, num_classes)
    assert model(torch.zeros(3, 3, 64, 64)).shape == (3, num_outputs(num_classes))


def test_seed_cnn_matches_the_keras_model_layer_for_layer():
    model = create_model("seed-cnn", 2)
    counts = [sum(p.numel() for p in layer.parameters()) for layer in model if any(True for _ in layer.parameters())]
    assert counts == [896, 9_248, 802_944, 129]
    assert sum(counts) == 813_217
    shapes: dict[str, list[tuple[int, ...]]] = {}
    x = torch.zeros(1, 3, 64, 64)
    for layer in model:
        x = layer(x)
        shapes.setdefault(type(layer).__name__, []).append(tuple(x.shape[1:]))
    assert shapes["Conv2d"] == [(32, 62, 62), (32, 29, 29)]
    assert shapes["MaxPool2d"] == [(32, 31, 31), (32, 14, 14)]
    assert shapes["Flatten"] == [(6272,)]
    assert shapes["Linear"] == [(128,), (1,)]
    assert len(shapes["ReLU"]) == 3


def test_seed_cnn_starts_with_keras_initialisation():
    torch.manual_seed(0)
    model = create_model("seed-cnn", 2)
    for layer in model:
        if isinstance(layer, torch.nn.Conv2d | torch.nn.Linear):
            fan_in = layer.weight[0].numel()
            fan_out = layer.weight.shape[0] * layer.weight[0, 0].numel()
            bound = math.sqrt(6 / (fan_in + fan_out))
            assert torch.all(layer.bias == 0)
            assert layer.weight.abs().max() <= bound
            assert layer.weight.abs().max() > 0.9 * bound  # uniform over the whole Glorot range
            assert abs(layer.weight.std().item() - bound / math.sqrt(3)) < 0.1 * bound


def test_seed_cnn_follows_the_image_size():
    model = create_model("seed-cnn", 3, image_size=96)
    assert model(torch.zeros(2, 3, 96, 96)).shape == (2, 3)


def test_unknown_model_lists_the_known_names():
    with pytest.raises(ConfigError, match="seed-cnn"):
        create_model("resnet-9000", 2)


def test_one_class_is_refused():
    with pytest.raises(ConfigError, match="at least 2 classes"):
        create_model("seed-cnn", 1)


def test_probabilities_are_a_sigmoid_for_two_classes_and_a_softmax_otherwise():
    binary = to_probabilities(torch.tensor([[0.0], [math.log(3)]]))
    assert torch.allclose(binary, torch.tensor([[0.5, 0.5], [0.25, 0.75]]))
    multi = to_probabilities(torch.tensor([[0.0, 0.0, math.log(2)]]))
    assert torch.allclose(multi, torch.tensor([[0.25, 0.25, 0.5]]))


def test_summary_shows_trainable_and_total_parameters():
    text = summarize(create_model("seed-cnn", 2), Preprocessing(image_size=64))
    assert "813,217" in text
    assert "Trainable params: 813,217" in text
    assert "[1, 32, 62, 62]" in text
