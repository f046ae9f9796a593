from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from imgclf.config import AUGMENT_PRESETS, AugmentConfig
from imgclf.data.augment import augment, describe, draw_params


def gradient_batch(n: int = 4, size: int = 32) -> torch.Tensor:
    """uint8 images whose pixel value rises left to right (so flips and shifts are visible)."""
    row = torch.linspace(0, 255, size).round().to(torch.uint8)
    return row.view(1, 1, 1, size).expand(n, 3, size, size).clone()


def test_none_only_rescales_to_unit_range():
    images = gradient_batch()
    out = augment(images, AUGMENT_PRESETS["none"], torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32
    assert torch.equal(out, images.float() / 255)


def test_horizontal_flip_mirrors_exactly_about_half_the_images():
    images = gradient_batch(n=200)
    config = AugmentConfig(horizontal_flip=True)
    out = augment(images, config, torch.Generator().manual_seed(0))
    plain = images.float() / 255
    flipped = [torch.allclose(o, plain[0].flip(-1), atol=1e-5) for o in out]
    unchanged = [torch.allclose(o, plain[0], atol=1e-5) for o in out]
    assert all(f or u for f, u in zip(flipped, unchanged))
    assert 70 < sum(flipped) < 130


def test_shear_is_in_degrees_as_in_keras():
    images = gradient_batch(n=64)
    degrees = augment(images, AugmentConfig(shear=0.2), torch.Generator().manual_seed(0))
    # 0.2 degrees moves a corner of a 32-pixel image by about 0.06 pixels: almost nothing.
    assert (degrees - images.float() / 255).abs().max() < 0.01
    as_radians = augment(images, AugmentConfig(shear=math.degrees(0.2)), torch.Generator().manual_seed(0))
    assert (as_radians - images.float() / 255).abs().max() > 0.05


def test_zoom_is_drawn_per_axis_within_the_range():
    params = draw_params(AugmentConfig(zoom=0.2), 500, 64, 64, torch.Generator().manual_seed(0))
    zoom_x, zoom_y = params.theta[:, 0, 0], params.theta[:, 1, 1]
    for zoom in (zoom_x, zoom_y):
        assert zoom.min() >= 0.8 - 1e-6 and zoom.max() <= 1.2 + 1e-6
        assert zoom.min() < 0.82 and zoom.max() > 1.18
    assert (zoom_x - zoom_y).abs().mean() > 0.05  # independent, not one factor for both axes


def test_nearest_fill_repeats_the_edge_instead_of_black():
    images = torch.full((2, 3, 16, 16), 200, dtype=torch.uint8)
    zoom_out = AugmentConfig(width_shift=0.4, fill_mode="nearest")
    out = augment(images, zoom_out, torch.Generator().manual_seed(0))
    assert torch.allclose(out, torch.full_like(out, 200 / 255), atol=1e-5)
    constant = augment(images, dataclasses.replace(zoom_out, fill_mode="constant"), torch.Generator().manual_seed(0))
    assert constant.min() == 0


def test_rotation_by_90_degrees_turns_the_image():
    images = gradient_batch(n=1, size=16)
    params = draw_params(AugmentConfig(rotation=90), 1, 16, 16, torch.Generator().manual_seed(0))
    params.theta[0] = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])  # exactly 90°
    from imgclf.data.augment import apply_params

    out = apply_params(images, params, AugmentConfig(rotation=90))
    plain = images.float() / 255
    assert torch.allclose(out[0, 0], plain[0, 0].rot90(1, dims=(0, 1)), atol=1e-5) or torch.allclose(
        out[0, 0], plain[0, 0].rot90(-1, dims=(0, 1)), atol=1e-5
    )


@pytest.mark.parametrize("preset", sorted(AUGMENT_PRESETS))
def test_same_seed_same_augmentation(preset):
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    first = augment(images, AUGMENT_PRESETS[preset], torch.Generator().manual_seed(3))
    second = augment(images, AUGMENT_PRESETS[preset], torch.Generator().manual_seed(3))
    assert torch.equal(first, second)
    assert first.min() >= 0 and first.max() <= 1


def test_default_preset_changes_images_and_colour():
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    out = augment(images, AUGMENT_PRESETS["default"], torch.Generator().manual_seed(0))
    assert (out - images.float() / 255).abs().mean() > 0.02


def test_describe_names_the_settings():
    assert describe(AUGMENT_PRESETS["seed"]) == "shear ±0.2°, zoom 0.8–1.2 per axis, horizontal flip"
    assert describe(AUGMENT_PRESETS["none"]) == "none"
