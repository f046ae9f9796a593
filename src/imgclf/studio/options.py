"""The studio's settings (`StudioOptions`): where it listens, whether it opens the browser, and its upload limits."""

from __future__ import annotations

from dataclasses import dataclass

from imgclf.config import ConfigError
from imgclf.serve.options import MB, ServeOptions

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class StudioOptions:
    """How `imgclf studio` runs.

    host, port: the address to listen on; port 0 takes any free port. Another host than this machine's own
        (`LOOPBACK_HOSTS`) lets others on the network use the studio.
    open_browser: open the studio's page in the default browser once it listens.
    max_upload_bytes: the largest photo one may add (a camera's JPEG is 3-12 MB).
    max_pixels: the most pixels of one photo, read from its header before it is decoded.
    max_files: the most photos one upload request may hold (the page sends more in several requests).
    """

    host: str = "127.0.0.1"
    port: int = 0
    open_browser: bool = True
    max_upload_bytes: int = 25 * MB
    max_pixels: int = 40_000_000
    max_files: int = 32

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_pixels", "max_files"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"`{name}` must be greater than 0. Received: {name}={getattr(self, name)}.")

    @property
    def uploads(self) -> ServeOptions:
        """The limits in the form `imgclf.serve.uploads` reads them, so that uploads are checked as `serve` does."""
        return ServeOptions(
            max_upload_bytes=self.max_upload_bytes,
            max_pixels=self.max_pixels,
            max_batch_files=self.max_files,
            max_queue=max(self.max_files, ServeOptions.max_queue),
        )

    @property
    def local_only(self) -> bool:
        """True when only this machine can reach the studio."""
        return self.host in LOOPBACK_HOSTS
