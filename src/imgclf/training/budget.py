"""`--time-limit`: the time a run may take, counted from the start of `train`, and what still fits in it.

imgclf train data/training_set --time-limit 10m                 # the epochs that fit in 10 minutes
imgclf train data/training_set --preset best --time-limit 2m    # the candidates that fit in 2 minutes

The run keeps the best model found before the limit; finishing it (calibration, metrics, report) comes after.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from imgclf.config import TrainConfig, parse_duration


class Deadline:
    """When a run must stop, read from a `clock` in seconds (`time.monotonic`; tests give their own)."""

    def __init__(self, seconds: float | None, clock: Callable[[], float] = time.monotonic):
        self.seconds = seconds
        self.clock = clock
        self.started = clock()

    @classmethod
    def of(cls, config: TrainConfig) -> Deadline:
        """The deadline of `config`'s `--time-limit`, from now (none without a limit)."""
        return cls(parse_duration(config.time_limit) if config.time_limit is not None else None)

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return self.clock() - self.started

    def left(self) -> float:
        """Seconds left before the limit (infinite without one)."""
        return float("inf") if self.seconds is None else self.seconds - self.elapsed()

    def fits(self, seconds: float) -> bool:
        """Whether work expected to take `seconds` ends before the limit."""
        return seconds <= self.left()
