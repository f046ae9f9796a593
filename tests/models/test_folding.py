from __future__ import annotations

import torch
from torch import nn

import imgclf
from imgclf.models import BuildOptions
from imgclf.models.folding import fold_if_exact


def batchnorms(module: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in module.modules())


def test_lite0_folds_every_batchnorm_and_gives_the_same_features():
    model = imgclf.create_model("efficientnet_lite0", 2, 96, BuildOptions(pretrained=True))
    backbone = model.backbone.eval()
    images = torch.rand(2, 3, 96, 96) * 2 - 1
    folded = fold_if_exact(backbone, images)
    assert batchnorms(backbone) > 40 and batchnorms(folded) == 0
    with torch.inference_mode():
        expected, got = backbone(images), folded(images)
    torch.testing.assert_close(got, expected, atol=1e-4 * float(expected.abs().max()), rtol=0)
    assert batchnorms(backbone) > 40  # the model itself, still trainable, is left as it was


class NormBeforeConv(nn.Module):
    """Registers a conv then a BatchNorm, but normalises the input before the conv: folding them would be wrong."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3)
        self.norm.running_mean.fill_(0.5)
        self.norm.running_var.fill_(4.0)

    def forward(self, x):
        return self.conv(self.norm(x))


def test_a_fold_that_would_change_the_outputs_is_not_used():
    module = NormBeforeConv().eval()
    assert fold_if_exact(module, torch.rand(2, 3, 8, 8)) is module
