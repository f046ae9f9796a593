"""`--time-limit`: the time a run may take, counted from the start of `train`, and what still fits in it.

imgclf train data/training_set --time-limit 10m                 # the epochs that fit in 10 minutes
imgclf train data/training_set --preset best --time-limit 2m    # the candidates that fit in 2 minutes

The run keeps the best model found before the limit; finishing it (calibration, metrics, report) comes after.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from imgclf.config import ConfigError, TrainConfig

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def parse_duration(text: str) -> float | None:
    """Seconds in `90s`, `10m`, `1h`, `1h30m` or `2.5m`; None when `text` is not such a duration."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not text.strip() or match is None or not any(match.groups()):
        return None
    hours, minutes, seconds = (float(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def time_limit_seconds(time_limit: str | None) -> float | None:
    """`--time-limit` in seconds (None without one); raises `ConfigError` for a value that is no duration."""
    if time_limit is None:
        return None
    seconds = parse_duration(time_limit) if isinstance(time_limit, str) else None
    if seconds is None or seconds <= 0:
        raise ConfigError(
            f"Invalid option --time-limit. Received: --time-limit={time_limit!r}. Give a duration such as 90s, 10m, "
            "1h or 1h30m.",
            "--time-limit",
        )
    return seconds


class Deadline:
    """When a run must stop, read from a `clock` in seconds (`time.monotonic`; tests give their own)."""

    def __init__(self, seconds: float | None, clock: Callable[[], float] = time.monotonic):
        self.seconds = seconds
        self.clock = clock
        self.started = clock()

    @classmethod
    def of(cls, config: TrainConfig) -> Deadline:
        """The deadline of `config`'s `--time-limit`, from now (none without a limit); raises `ConfigError` for a
        value that is no duration."""
        return cls(time_limit_seconds(config.time_limit))

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return self.clock() - self.started

    def left(self) -> float:
        """Seconds left before the limit (infinite without one)."""
        return float("inf") if self.seconds is None else self.seconds - self.elapsed()

    def fits(self, seconds: float) -> bool:
        """Whether work expected to take `seconds` ends before the limit."""
        return seconds <= self.left()
