"""The audit's extractor: the features `imgclf train` caches, and the pooled outputs of earlier stages beside them."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from imgclf.audit.stage_features import EARLIER_STAGES, StageFeatures, runs_like, split_parts
from imgclf.models import BuildOptions, create_model
from imgclf.models.heads import fixed_prefix_length


def lite0_parts() -> tuple[nn.Module, nn.Module]:
    network = create_model("efficientnet_lite0", 2, options=BuildOptions(pretrained=False)).eval()
    return network, nn.Sequential(*network.head[: fixed_prefix_length(network.head)])


def test_the_first_part_is_what_training_caches_and_the_rest_are_stage_means():
    network, prefix = lite0_parts()
    assert runs_like(network.backbone, network.blocks, 64)
    extractor = StageFeatures(network.blocks, prefix, 64).eval()
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))

    with torch.no_grad():
        rows = extractor(images)
        cached = prefix(network.backbone(images))
        stage = network.blocks[-2](network.blocks[-3](nn.Sequential(*network.blocks[:-3])(images)))

    assert extractor.part_sizes == [1280, 320, 192, 112, 80]  # the final features, then blocks 6, 5, 4, 3
    assert len(extractor.part_sizes) == 1 + EARLIER_STAGES
    assert rows.shape == (3, sum(extractor.part_sizes))
    torch.testing.assert_close(rows[:, :1280], cached, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(rows[:, 1280:1600], stage.mean((2, 3)), rtol=1e-4, atol=1e-4)


def test_stages_that_do_not_make_the_backbone_are_not_used():
    network, prefix = lite0_parts()
    shuffled = [network.blocks[0], network.blocks[2], network.blocks[1], *network.blocks[3:]]
    assert not runs_like(network.backbone, shuffled, 64)
    assert not runs_like(network.backbone, network.blocks[:-1], 64)  # the last stage missing
    alone = StageFeatures([network.backbone], prefix, 64)
    assert alone.part_sizes == [1280]


def test_each_part_counts_the_same_whatever_its_width():
    rows = np.hstack([np.full((2, 6), 3.0), np.full((2, 2), 0.5)])
    features, label_features = split_parts(rows, [6, 2])
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1)
    np.testing.assert_allclose(np.linalg.norm(label_features[:, :6], axis=1), np.sqrt(0.5))
    np.testing.assert_allclose(np.linalg.norm(label_features[:, 6:], axis=1), np.sqrt(0.5))
