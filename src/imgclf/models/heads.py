"""Classification heads that sit on a backbone's feature map (N, C, H, W)."""

from __future__ import annotations

from torch import nn

from imgclf.config import HEADS


def create_head(name: str, feature_shape: tuple[int, int, int], num_outputs: int, dropout: float = 0.2) -> nn.Module:
    """`linear`: average-pool → dropout → dense; `mlp`: average-pool → dense 512 relu → dropout → dense;
    `seed`: the tutorial's flatten → dropout 0.5 → dense 512 relu → dense."""
    channels, height, width = feature_shape
    if name == "linear":
        return nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_outputs)
        )
    if name == "mlp":
        return nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels, 512),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(512, num_outputs),
        )
    if name == "seed":
        return nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.5),
            nn.Linear(channels * height * width, 512),
            nn.ReLU(inplace=True),
            nn.Linear(512, num_outputs),
        )
    raise ValueError(f"Unknown head {name!r}; choose one of {list(HEADS)}.")


def fixed_prefix_length(head: nn.Sequential) -> int:
    """How many leading layers of `head` have no parameters and no randomness (pooling, flattening).

    With a frozen backbone their output is what the feature cache stores, and the rest of the head trains on it.
    """
    count = 0
    for layer in head:
        if not isinstance(layer, nn.AdaptiveAvgPool2d | nn.Flatten):
            break
        count += 1
    return count
