"""The web service's limits (`ServeOptions`), checked once, and the messages that name them as the user set them."""

from __future__ import annotations

import dataclasses
import os
import resource
from dataclasses import dataclass, field

from imgclf.config import ConfigError

MB = 1024 * 1024

# The `imgclf serve` option that sets each field, and the field's value for one of the option's units.
COMMAND_LINE_OPTIONS = {
    "max_upload_bytes": ("--max-upload-mb", MB),
    "timeout_s": ("--timeout", 1),
    "max_batch_size": ("--max-batch", 1),
    "max_pixels": ("--max-pixels", 1),
}


def descriptor_limit() -> int:
    """How many files this process may hold open (`ulimit -n`); every connection is one."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 2**20


def _as_given(field_name: str, value: float) -> tuple[str, str]:
    """The option's name and `name=value` as the user gave them: the command line's for the options it has."""
    if field_name in COMMAND_LINE_OPTIONS:
        option, unit = COMMAND_LINE_OPTIONS[field_name]
        return option, f"{option}={value / unit:g}"
    return f"`{field_name}`", f"{field_name}={value}"


@dataclass(frozen=True)
class ServeOptions:
    """Limits of the web service.

    max_upload_bytes: the largest image accepted (a batch may hold `max_batch_files` of them).
    timeout_s: the most one request may take, from its first byte read to its answer.
    max_batch_size: the most images the model gets in one call.
    max_batch_files: the most images one `/predict/batch` request may hold.
    max_queue: the most images waiting for the model; more are answered 503 (busy, retry).
    decode_threads: threads decoding uploads (also bounds the memory decoding can take); default half the cores.
    max_pixels: the most pixels of one image, seen in its header before it is decoded (JPEGs count at the size
        they are decoded to, about the model's); more are answered 413.
    max_connections: the most connections open at once; default half the open-files limit (`ulimit -n`). At
        the limit a new connection closes the oldest that has not sent a request yet, or gets 503 if all are busy.
    header_timeout_s: the most seconds a connection may take to send a request's headers, from its opening
        or the previous answer; then it is closed.

    A value it cannot use raises `ConfigError` naming the `imgclf serve` option that sets it, in that option's
    unit (`--max-upload-mb`, `--timeout`, `--max-batch`, `--max-pixels`), or the field for the others.
    """

    max_upload_bytes: int = 10 * MB
    timeout_s: float = 10.0
    max_batch_size: int = 8
    max_batch_files: int = 16
    max_queue: int = 64
    # Half the cores: the engine's own threads use them all, and on 2 cores one decoding thread gave 34 against
    # 24-27 requests/s for two (bench/serve_load.py, EfficientNet-Lite0 on OpenVINO).
    decode_threads: int = field(default_factory=lambda: max(1, len(os.sched_getaffinity(0)) // 2))
    # A 40-megapixel camera's photo. Decoding to the model's size, a 1-bit PNG of 6,300 x 6,300 took 1.3 s and
    # 0.42 GB; one of 9,400 x 9,400 (10.8 KB, under Pillow's own limit of 89.5 million) took 3.4 s and 0.93 GB.
    max_pixels: int = 40_000_000
    # Half the descriptors: the rest is for the model's files, the threads, and the connections the event loop
    # accepts in one go before any is checked (up to the listen backlog, a quarter of them; see `server.py`).
    max_connections: int = field(default_factory=lambda: descriptor_limit() // 2)
    header_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        for option in dataclasses.fields(self):
            value = getattr(self, option.name)
            if not value > 0:
                name, received = _as_given(option.name, value)
                raise ConfigError(f"{name} must be greater than 0. Received: {received}.")
        if self.max_batch_size > self.max_queue:
            raise ConfigError(
                f"--max-batch must be at most {self.max_queue}, the most images that may wait for the model. "
                f"Received: --max-batch={self.max_batch_size}."
            )
        if self.max_batch_files > self.max_queue:
            raise ConfigError(
                "`max_queue` must hold a whole batch request: at least `max_batch_files`. "
                f"Received: max_queue={self.max_queue}, max_batch_files={self.max_batch_files}."
            )
        if self.max_connections >= descriptor_limit():
            raise ConfigError(
                f"`max_connections` must be below this process's limit of {descriptor_limit()} open files "
                f"(`ulimit -n`): each connection holds one. Received: max_connections={self.max_connections}. "
                "Lower it, or raise the limit."
            )


SHRINK = "Send a smaller image, or start the server with a larger --max-upload-mb"
FEWER_PIXELS = "Send a smaller image, or start the server with a larger --max-pixels"


def upload_limit(options: ServeOptions) -> str:
    """The per-image upload limit in words, for error messages."""
    limit = options.max_upload_bytes
    return f"the limit of {limit / MB:g} MB per image ({limit} bytes)"


def slow_upload(options: ServeOptions) -> str:
    """The 408 message: the upload took longer than the timeout."""
    return f"The upload did not arrive within the server's timeout of {options.timeout_s:g} s. Send it again."


def slow_answer(options: ServeOptions) -> str:
    """The 504 message: no answer within the timeout."""
    return (
        f"No answer within the server's timeout of {options.timeout_s:g} s: it is overloaded. "
        "Retry later, or start it with a longer --timeout."
    )
