"""Ensembles of backbones as one model: names, averaged calibrated probabilities, flip TTA, ONNX, Grad-CAM."""

from __future__ import annotations

import pytest
import torch

from imgclf.config import ConfigError, Preprocessing
from imgclf.deploy.engines import OnnxRuntimeEngine, TorchEngine
from imgclf.deploy.export import to_onnx
from imgclf.evaluation.explain import grad_cam
from imgclf.models import create_model, get_spec, to_probabilities
from imgclf.models.ensemble import Ensemble, ensemble_name, parse_ensemble_name

LITE01_FLIP = "ensemble:efficientnet_lite0+efficientnet_lite1+flip"


@pytest.fixture(scope="module")
def ensemble() -> Ensemble:
    """Lite0 and Lite1 (untrained weights: fast to build) over 3 classes, with flip TTA and set temperatures."""
    torch.manual_seed(0)
    model = create_model(LITE01_FLIP, 3).eval()
    for member, temperature in zip(model.members, (0.5, 2.0)):
        member.temperature.fill_(temperature)
    return model


def test_the_name_says_the_members_and_flip():
    assert ensemble_name(["efficientnet_lite0", "efficientnet_lite1"], flip=True) == LITE01_FLIP
    assert parse_ensemble_name(LITE01_FLIP) == (["efficientnet_lite0", "efficientnet_lite1"], True)
    assert parse_ensemble_name("ensemble:efficientnet_lite2") == (["efficientnet_lite2"], False)
    # The input size is the largest member's; each member resizes to its own inside the model.
    assert get_spec(LITE01_FLIP).preprocessing.image_size == 240


@pytest.mark.parametrize("name", ["ensemble:", "ensemble:seed-cnn", "ensemble:flip", "ensemble:efficientnet_lite0+"])
def test_a_bad_ensemble_name_is_one_line(name):
    with pytest.raises(ConfigError, match=r"Invalid ensemble\. Received: --model=") as error:
        get_spec(name)
    assert "\n" not in str(error.value)


def test_probabilities_are_the_average_of_each_members_calibrated_ones(ensemble):
    images = torch.randn(2, 3, 240, 240)
    with torch.no_grad():
        expected = []
        for member in ensemble.members:
            resized = torch.nn.functional.interpolate(images, size=member.resized.size, mode="bilinear")
            for view in (resized, resized.flip(3)):
                logits = member.head(member.unflipped.backbone(view)) / member.temperature
                expected.append(to_probabilities(logits))
        got = to_probabilities(ensemble(images))
    torch.testing.assert_close(got, torch.stack(expected).mean(dim=0), atol=1e-5, rtol=0)


def test_the_cached_features_are_what_the_model_pools(ensemble):
    member = ensemble.members[1]
    images = torch.randn(2, 3, 240, 240)
    with torch.no_grad():
        for flipped in (False, True):
            pooled = member.features(images, flipped).mean(dim=(2, 3))
            torch.testing.assert_close(member.extractor(flipped)(images), pooled, atol=1e-5, rtol=1e-5)
        plain, mirrored = member.extractor(False)(images), member.extractor(True)(images)
    assert not torch.allclose(plain, mirrored)


def test_two_classes_give_one_logit_whose_sigmoid_is_the_average():
    model = create_model("ensemble:efficientnet_lite0+efficientnet_lite1", 2).eval()
    images = torch.randn(3, 3, 240, 240)
    with torch.no_grad():
        logits = model(images)
        members = torch.stack([member.probabilities(images, flip=False) for member in model.members]).mean(dim=0)
    assert logits.shape == (3, 1)
    torch.testing.assert_close(to_probabilities(logits), members, atol=1e-5, rtol=0)


def test_the_onnx_graph_holds_the_whole_ensemble_and_agrees_with_pytorch(ensemble):
    preprocessing = Preprocessing(240, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")
    graph = to_onnx(ensemble, preprocessing, 1.3, {"imgclf.model": LITE01_FLIP})
    pixels = torch.randint(0, 256, (4, 3, 240, 240), dtype=torch.uint8)
    expected = TorchEngine(ensemble, preprocessing, 1.3)(pixels)
    got = OnnxRuntimeEngine(graph)(pixels)
    assert abs(expected - got).max() < 1e-4
    # Flip TTA is inside the graph: a mirrored image gets the same answer.
    mirrored = OnnxRuntimeEngine(graph)(pixels.flip(3))
    assert abs(mirrored - got).max() < 1e-4


def test_grad_cam_looks_at_the_first_members_unflipped_feature_map(ensemble):
    heatmaps = grad_cam(ensemble, torch.randn(2, 3, 240, 240))
    assert heatmaps.shape == (2, 240, 240)
    assert ensemble.gradcam_layer is ensemble.members[0].unflipped
