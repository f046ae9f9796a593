"""Several backbones with their heads as one model: each member sees the image at its own input size (resized
inside the model), its logits are divided by its own temperature, and the members' probabilities are averaged.
With flip test-time augmentation each member also sees the mirrored image and its two answers are averaged.

The model's name says what it holds, so a run's `config.json` is enough to rebuild it (`runs.load_model`):

    ensemble:efficientnet_lite1+efficientnet_lite2+flip

It returns logits whose sigmoid / softmax are the averaged probabilities (their logarithm; for two classes the
log-odds), so predict, evaluate, calibration and the exported ONNX graph treat it as any other model.
`imgclf train --preset balanced|best` builds one (`training/presets.py`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imgclf.config import ConfigError
from imgclf.models.registry import BuildOptions, ModelSpec, get_spec, register_family, to_probabilities

PREFIX = "ensemble:"
FLIP = "flip"
POOLED = 2
"""The linear head's parameter-free start (average pooling, flattening): the cached features are its output."""
SMALLEST_PROBABILITY = 1e-7
"""Averaged probabilities are clipped here before their logarithm, so that a certain answer stays finite."""


def ensemble_name(members: list[str], flip: bool) -> str:
    """The model name of `members` (registered backbones, best first), with flip test-time augmentation or not.

    >>> ensemble_name(["efficientnet_lite1", "efficientnet_lite0"], flip=True)
    'ensemble:efficientnet_lite1+efficientnet_lite0+flip'
    """
    return PREFIX + "+".join([*members, *([FLIP] if flip else [])])


def parse_ensemble_name(name: str) -> tuple[list[str], bool]:
    """(members, flip) of an `ensemble:` model name; raises `ConfigError` for a member that is no backbone."""
    parts = name.removeprefix(PREFIX).split("+")
    flip = parts[-1] == FLIP
    members = parts[:-1] if flip else parts
    unusable = [
        member
        for member in members
        if not member or member.startswith(PREFIX) or member == FLIP or not get_spec(member).backbone
    ]
    if not members or unusable:
        raise ConfigError(
            f"Invalid ensemble. Received: --model={name!r}. Join registered backbones with '+', such as "
            f"{ensemble_name(['efficientnet_lite0', 'efficientnet_lite1'], True)!r}; ({unusable or 'none'} cannot "
            "be members)."
        )
    return members, flip


class Resized(nn.Module):
    """The input brought to `size`² (bilinear, as `F.interpolate` does it in PyTorch and in the ONNX graph)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] == self.size and images.shape[-2] == self.size:
            return images
        return F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:  # part of the feature cache's key
        return f"size={self.size}"


class Mirrored(nn.Module):
    """The image flipped left to right."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.flip(images, dims=(3,))


class Unflipped(nn.Module):
    """The member's backbone on the image as given: its own module, so that Grad-CAM hooks it once per image."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)


class Member(nn.Module):
    """One backbone and its head (a `linear` head: pooling, dropout, dense), at its own input size, with the
    temperature fitted to its logits."""

    def __init__(self, classifier: nn.Module, size: int):
        super().__init__()
        self.resized = Resized(size)
        self.mirrored = Mirrored()
        self.unflipped = Unflipped(classifier.backbone)
        self.head = classifier.head
        self.register_buffer("temperature", torch.ones(()))

    def features(self, images: torch.Tensor, flipped: bool = False) -> torch.Tensor:
        """The backbone's feature map of `images` (normalised, at the ensemble's size), mirrored first or not."""
        images = self.resized(images)
        return self.unflipped.backbone(self.mirrored(images)) if flipped else self.unflipped(images)

    def extractor(self, flipped: bool) -> nn.Module:
        """What the feature cache stores for this member: the pooled features `features` gives."""
        mirrored = [self.mirrored] if flipped else []
        return nn.Sequential(self.resized, *mirrored, self.unflipped.backbone, *self.head[:POOLED])

    @property
    def dense(self) -> nn.Linear:
        """The head's last layer, which the preset fits on the pooled features."""
        return self.head[-1]

    def probabilities(self, images: torch.Tensor, flip: bool) -> torch.Tensor:
        """Calibrated class probabilities (N, classes), averaged with the mirrored image's when `flip`."""
        probabilities = to_probabilities(self.head(self.features(images)).float() / self.temperature)
        if flip:
            mirrored = self.head(self.features(images, flipped=True)).float() / self.temperature
            probabilities = (probabilities + to_probabilities(mirrored)) / 2
        return probabilities


class Ensemble(nn.Module):
    """`members` (best first) whose calibrated probabilities are averaged; with `flip`, over each image and its
    mirror. Returns logits: see `averaged_logits`."""

    def __init__(self, members: list[Member], flip: bool):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.flip = flip

    @property
    def gradcam_layer(self) -> nn.Module:
        """Where Grad-CAM looks: the first (best) member's feature map of the unflipped image."""
        return self.members[0].unflipped

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        averaged = torch.stack([member.probabilities(images, self.flip) for member in self.members]).mean(dim=0)
        return averaged_logits(averaged)


def averaged_logits(probabilities: torch.Tensor) -> torch.Tensor:
    """Logits whose sigmoid (one output, two classes) or softmax are `probabilities` (N, classes), clipped at
    `SMALLEST_PROBABILITY`: the log-odds of the second class, or the logarithms."""
    clipped = probabilities.clamp(SMALLEST_PROBABILITY, 1.0)
    if probabilities.shape[1] == 2:
        return (clipped[:, 1].log() - clipped[:, 0].log())[:, None]
    return clipped.log()


def _ensemble_spec(name: str) -> ModelSpec:
    members, flip = parse_ensemble_name(name)
    specs = [get_spec(member) for member in members]
    largest = max(specs, key=lambda spec: spec.preprocessing.image_size).preprocessing
    normalisation = (largest.mean, largest.std)
    mismatched = [spec.name for spec in specs if (spec.preprocessing.mean, spec.preprocessing.std) != normalisation]
    if mismatched:
        raise ConfigError(
            f"Invalid ensemble. Received: --model={name!r}. Its members normalise images differently "
            f"({mismatched} differ from {largest}); combine backbones with the same mean and std."
        )

    def build(outputs: int, image_size: int, options: BuildOptions) -> nn.Module:
        built = []
        for spec in specs:
            size = spec.preprocessing.image_size
            member_options = BuildOptions(pretrained=options.pretrained, head="linear")
            built.append(Member(spec.build(outputs, size, member_options), size))
        return Ensemble(built, flip)

    return ModelSpec(name, build, largest, backbone=False)


register_family(PREFIX, _ensemble_spec)
