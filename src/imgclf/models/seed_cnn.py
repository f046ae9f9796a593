"""The tutorial's small CNN, layer for layer, with Keras's default initialisation."""

from __future__ import annotations

from torch import nn

from imgclf.config import Preprocessing
from imgclf.models import register_model


def _keras_init(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases, as Keras's Conv2D and Dense layers start."""
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)


@register_model("seed-cnn", Preprocessing(image_size=64))
def seed_cnn(num_outputs: int, image_size: int) -> nn.Module:
    """Conv 32 → pool → Conv 32 → pool → dense 128 → output (813,217 parameters on 64×64×3, 2 classes)."""
    side = ((image_size - 2) // 2 - 2) // 2
    model = nn.Sequential(
        nn.Conv2d(3, 32, kernel_size=3),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, kernel_size=3),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * side * side, 128),
        nn.ReLU(inplace=True),
        nn.Linear(128, num_outputs),
    )
    model.apply(_keras_init)
    return model
