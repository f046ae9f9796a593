"""The audit's settings: the problems `--fail-on` can name and the defaults of its thresholds.

Imports nothing, so the command line's parser can offer these without loading numpy, Pillow or torch.
"""

from __future__ import annotations

FAIL_ON_CHOICES = (
    "leakage",
    "corrupt",
    "duplicates",
    "mismatch",
    "tiny",
    "imbalance",
    "label-issues",
    "outliers",
    "near-duplicates",
    "quality",
)
DEFAULT_NEAR_THRESHOLD = 6
DEFAULT_MIN_SIZE = 32
HASH_BITS = 64
DEFAULT_MODEL = "efficientnet_lite0"
"""The backbone whose features find label issues, outliers and embedding near-duplicates (weights install offline)."""
DEFAULT_SIMILARITY = 0.90
"""The lowest cosine similarity of two pictures' backbone features that makes them embedding near-duplicates."""
