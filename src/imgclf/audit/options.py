"""The audit's settings: the problems `--fail-on` can name and the defaults of its thresholds.

Imports nothing, so the command line's parser can offer these without loading numpy, Pillow or torch.
"""

from __future__ import annotations

FAIL_ON_CHOICES = ("leakage", "corrupt", "duplicates", "mismatch", "tiny", "imbalance")
DEFAULT_NEAR_THRESHOLD = 6
DEFAULT_MIN_SIZE = 32
HASH_BITS = 64
