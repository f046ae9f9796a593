"""The backbone's features with the mean-pooled outputs of its last stages beside them, in one pass.

The final features (what `imgclf train` caches) find near-duplicates and outliers; heads looking for wrong labels
learn better from the earlier stages too. With 5% of TrashNet's labels flipped, EfficientNet-Lite0's final
features beside the mean-pooled outputs of its four stages before them raised the precision of the out-of-fold
ranking at 90% recall from 62.7% to 73.6% on 21 draws, and from 65.9% to 75.4% on 20 draws kept apart (see
docs/performance.md, "Label issues"), for the cost of the pooling.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

EARLIER_STAGES = 4
"""Stages before the last whose mean-pooled outputs join the final features."""


class StageFeatures(nn.Module):
    """`head_prefix`'s output of the last of `blocks` (run in turn), then the spatial means of the
    `EARLIER_STAGES` outputs before it, the latest first, all in one row per picture; `part_sizes` says how
    long each part is."""

    def __init__(self, blocks: list[nn.Module], head_prefix: nn.Module, image_size: int):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head_prefix = head_prefix
        self.earlier = min(EARLIER_STAGES, len(blocks) - 1)
        with torch.no_grad():
            outputs = self._outputs(torch.zeros(1, 3, image_size, image_size))
        self.part_sizes = [row.shape[1] for row in outputs]

    def _outputs(self, images: torch.Tensor) -> list[torch.Tensor]:
        stages = []
        for block in self.blocks:
            images = block(images)
            stages.append(images)
        earlier = stages[-1 - self.earlier : -1][::-1]
        return [self.head_prefix(stages[-1]).flatten(1), *(stage.mean((2, 3)) for stage in earlier)]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat(self._outputs(images), dim=1)


def runs_like(backbone: nn.Module, blocks: list[nn.Module], image_size: int) -> bool:
    """Whether running `blocks` in turn gives what `backbone` gives (on noise): then `StageFeatures` can use them."""
    sequence = nn.Sequential(*blocks).eval()
    noise = torch.rand(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = backbone.eval()(noise)
        try:
            got = sequence(noise)
        except RuntimeError:
            return False
    return got.shape == expected.shape and torch.allclose(got, expected, rtol=1e-4, atol=1e-4)


def unit_rows(rows: np.ndarray) -> np.ndarray:
    """`rows` scaled to unit length (all-zero rows stay zero)."""
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def split_parts(rows: np.ndarray, part_sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The final features of `StageFeatures` rows, unit length, and the rows with each part made unit length and
    the whole again (each stage counts the same, whatever its width)."""
    parts = np.split(rows, np.cumsum(part_sizes)[:-1], axis=1)
    return unit_rows(parts[0]), unit_rows(np.hstack([unit_rows(part) for part in parts]))
