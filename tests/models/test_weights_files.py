from __future__ import annotations

import pytest
import torch

from imgclf.models import BuildOptions, create_model
from imgclf.models.backbones import WeightsError


@pytest.mark.parametrize(
    ("content", "held"),
    [
        ([torch.zeros(2)], "a list"),
        (torch.zeros(2), "a Tensor"),
        ({"state_dict": "x"}, "a dict whose 'state_dict' is a str"),
        ({"features.0.weight": torch.zeros(1), "epoch": 3}, "a dict whose 'epoch' is an int"),
        ({"model": {"features.0.weight": torch.zeros(1)}, "epoch": 3}, "a dict whose 'model' is a dict of tensors"),
        (
            {"state_dict": {"features.0.weight": [1.0]}},
            "a dict whose 'state_dict' is a dict whose 'features.0.weight' is a list",
        ),
    ],
)
def test_a_file_that_loads_but_holds_no_weights_is_one_line_saying_what_it_holds(tmp_path, content, held):
    path = tmp_path / "weights.pth"
    torch.save(content, path)
    with pytest.raises(WeightsError) as error:
        create_model("vgg16", 2, options=BuildOptions(weights=str(path)))
    assert str(error.value) == (
        f"Weights file {path} holds {held}, not a state dict (tensors by parameter name). "
        f"Save model.state_dict(), or give a safetensors file. Received: --weights={path}"
    )
