"""What the bench/ scripts share: where the tutorial's photos are, and the `--data` option that names them.

Standard library only, so the Keras side (`keras_tutorial.py`, run in its own venv) can use it too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CARS_PLANES = REPO_ROOT.parent / "shared" / "datasets" / "cars-planes"


def add_data_option(parser: argparse.ArgumentParser) -> None:
    """`--data DIR`: a folder holding training_set/ and val_set/, by default the tutorial's photos."""
    parser.add_argument(
        "--data",
        type=Path,
        default=CARS_PLANES,
        help="a folder holding training_set/ and val_set/ (default: %(default)s)",
    )
