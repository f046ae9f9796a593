"""The audit's settings: the problems `--fail-on` can name and the defaults of its thresholds.

The near-duplicate threshold is the one the validation split keeps groups together by (`data/groups.py`).
"""

from __future__ import annotations

from imgclf.data.groups import HASH_BITS, NEAR_THRESHOLD

FAIL_ON_CHOICES = ("leakage", "corrupt", "duplicates", "mismatch", "tiny", "imbalance")
DEFAULT_NEAR_THRESHOLD = NEAR_THRESHOLD
DEFAULT_MIN_SIZE = 32
__all__ = ["DEFAULT_MIN_SIZE", "DEFAULT_NEAR_THRESHOLD", "FAIL_ON_CHOICES", "HASH_BITS"]
