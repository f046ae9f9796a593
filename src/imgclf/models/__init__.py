"""Models by name: `create_model(name, num_classes, image_size)` builds any registered architecture.

`registry.py` holds the registry; importing this package registers the built-in models (`seed_cnn.py`,
`backbones.py`) and the `ensemble:` family (`ensemble.py`).
"""

from imgclf.models import backbones, ensemble, seed_cnn  # noqa: F401  (registers their models)
from imgclf.models.registry import (
    BuildOptions,
    ModelSpec,
    calibrated_probabilities,
    create_model,
    get_spec,
    list_models,
    num_outputs,
    register_model,
    summarize,
    to_probabilities,
)

__all__ = [
    "BuildOptions",
    "ModelSpec",
    "create_model",
    "get_spec",
    "list_models",
    "num_outputs",
    "register_model",
    "summarize",
    "calibrated_probabilities",
    "to_probabilities",
]
