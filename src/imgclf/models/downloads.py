"""Pretrained weights that come from the internet: used from the cache, downloaded when online, and a quick,
clear error when neither is possible (instead of a minute of retries)."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from urllib.parse import urlparse

from imgclf.config import ImgclfError

CONNECT_TIMEOUT = 3.0
"""Seconds to wait for a weights server before calling it unreachable."""

HUB_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors")


class WeightsError(ImgclfError):
    """Backbone weights cannot be found, downloaded or loaded; the message names the file or model."""


def reachable(url: str, timeout: float = CONNECT_TIMEOUT) -> bool:
    """Whether a TCP connection to `url`'s host opens within `timeout` seconds (name lookup included)."""
    parsed = urlparse(url)
    port = parsed.port or (80 if parsed.scheme == "http" else 443)

    def connect() -> bool:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True

    pool = ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(connect).result(timeout=timeout)
    except (OSError, FutureTimeout):
        return False
    finally:
        pool.shutdown(wait=False)  # a name lookup that hangs is left behind, not waited for


def check_timm_weights(model_name: str) -> None:
    """Raise `WeightsError` at once when timm would have to download `model_name`'s weights and cannot.

    Weights already in the cache, or a reachable server, let timm go on as usual.
    """
    import timm
    from huggingface_hub import constants, try_to_load_from_cache

    config = timm.get_pretrained_cfg(model_name)
    if config is None:
        return
    if config.hf_hub_id:
        cache = Path(constants.HF_HUB_CACHE)
        cached = [try_to_load_from_cache(config.hf_hub_id, name, cache_dir=cache) for name in HUB_FILES]
        source, where = constants.ENDPOINT, f"{cache} (repository {config.hf_hub_id})"
    elif config.url:
        import torch

        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(config.url).path).name
        cached, source, where = [str(cache) if cache.is_file() else None], config.url, str(cache)
    else:
        return
    if any(isinstance(path, str) for path in cached) or reachable(source):
        return
    raise WeightsError(
        f"Pretrained weights for timm model {model_name} are not in the cache ({where}) and "
        f"{urlparse(source).hostname} cannot be reached (offline?). Give a local file with --weights FILE, "
        "or use a backbone whose weights install offline, such as --model efficientnet_lite0."
    )
