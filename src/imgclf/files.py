"""File plumbing: atomic writes, JSON and CSV writers, safetensors, the cache folder, holding Ctrl-C, and
whether this process is the one that writes (under torchrun, only the main process does).

The ground floor of imgclf: it imports nothing of imgclf, so every other module may use it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def is_main_process() -> bool:
    """True unless torchrun started this process with a rank other than 0, which leaves the writing and the
    terminal to the main process."""
    return int(os.environ.get("RANK", "0")) == 0


def cache_dir(name: str) -> Path:
    """imgclf's cache folder `name`: under `$IMGCLF_CACHE` if set, else `~/.cache/imgclf`."""
    return Path(os.environ.get("IMGCLF_CACHE") or Path.home() / ".cache" / "imgclf") / name


def atomic_write_bytes(path: str | Path, data: bytes, durable: bool = True) -> None:
    """Write `data` to `path` through a temporary file and a rename, so readers never see half a file.

    `durable` also waits for the disk (fsync) before the rename; a cache, cheap to recompute, can skip that.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the permissions a plain open() would
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            if durable:
                os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block ends, then deliver it: the files written inside stay a matching set.

    Where Python cannot catch SIGINT (outside the main thread, or when another program owns its handler) the
    block runs unguarded.
    """
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield
        return
    held: list[int] = []
    signal.signal(signal.SIGINT, lambda number, frame: held.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        signal.raise_signal(signal.SIGINT)


def atomic_write_text(path: str | Path, text: str) -> None:
    """`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, values: object) -> None:
    """Write `values` as indented JSON, atomically.

    NaN and infinities become `null`, so that every JSON reader can read the file (they are not JSON).
    """
    atomic_write_text(path, json.dumps(_finite_or_none(values), indent=2, allow_nan=False) + "\n")


def _finite_or_none(value: object) -> object:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    return value


def write_csv(path: str | Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Write a CSV file with `header`, atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def save_figure(path: str | Path, figure) -> None:
    """Render a matplotlib figure to PNG, atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def save_tensors(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None, durable: bool = True
) -> None:
    """Save tensors as safetensors, atomically (`durable`: see `atomic_write_bytes`)."""
    from safetensors.torch import save

    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    atomic_write_bytes(path, save(tensors, metadata=metadata), durable)
