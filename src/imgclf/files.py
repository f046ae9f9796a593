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
import re
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

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
    """imgclf's cache folder `name`: under `$IMGCLF_CACHE` if set (`~` is the home folder), else `~/.cache/imgclf`."""
    return Path(os.environ.get("IMGCLF_CACHE") or Path.home() / ".cache" / "imgclf").expanduser() / name


def atomic_write_bytes(path: str | Path, data: bytes, durable: bool = True) -> None:
    """Write `data` to `path` through a temporary file and a rename, so readers never see half a file.

    `durable` also waits for the disk (fsync) before the rename; a cache, cheap to recompute, can skip that.
    """
    with atomic_writer(path, durable) as file:
        file.write(data)


@contextmanager
def atomic_writer(path: str | Path, durable: bool = True) -> Iterator[BinaryIO]:
    """A binary file to write in steps that replaces `path` when the block ends, and vanishes if it fails.

    What `atomic_write_bytes` does, for contents too large to hold in memory at once.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the permissions a plain open() would
        with os.fdopen(handle, "wb") as file:
            yield file
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
    atomic_write_text(path, json_text(values))


def json_text(values: object) -> str:
    """`values` as indented JSON text, NaN and infinities as `null` (see `write_json`)."""
    return json.dumps(_finite_or_none(values), indent=2, allow_nan=False) + "\n"


def _finite_or_none(value: object) -> object:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    return value


def write_csv(path: str | Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Write a CSV file with `header`, atomically; cells a spreadsheet would run as formulas are made inert."""
    atomic_write_text(path, csv_text(header, rows))


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What makes a spreadsheet read a cell as a formula (OWASP's list for CSV injection)."""
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
"""A number written as text, such as a formatted `-0.500000`: a spreadsheet reads it as that number."""


def csv_text(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """CSV text with `header`, every string cell that starts with `FORMULA_STARTS` prefixed with `'`.

    Class and file names come from the user's folders: a file named `=HYPERLINK(...)` must not become a live
    formula when predictions.csv is opened in a spreadsheet. Numbers, and numbers written as text, stay as they are
    (-0.5 stays -0.5).
    """
    return csv_rows_text([header, *rows])


def csv_rows_text(rows: Iterable[Sequence[object]]) -> str:
    """`csv_text`'s lines for `rows` alone (no header), for a CSV written in parts."""
    buffer = io.StringIO()
    plain = csv.writer(buffer, lineterminator="\n")
    # csv leaves a carriage return unquoted when the lines end in \n, and readers end the row there.
    quoted = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)
    for row in rows:
        cells = [inert_cell(cell) for cell in row]
        (quoted if any(isinstance(cell, str) and "\r" in cell for cell in cells) else plain).writerow(cells)
    return buffer.getvalue()


def inert_cell(cell: object) -> object:
    """`cell` as `csv_text` writes it: a string a spreadsheet would run as a formula gets a leading `'`."""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS) and not _DECIMAL.fullmatch(cell):
        return "'" + cell
    return cell


class CsvAppender:
    """A CSV file that grows by whole rows: each `write` appends rows and flushes them, with Ctrl-C held.

    Cells are made inert as `csv_text` makes them.

    An interrupted writer leaves every row it wrote whole. A new file starts with `header`; with `keep_bytes`
    (the end of the last whole row of a file being continued) the file is cut there and continued instead.
    Use it in a `with` block, which closes the file.
    """

    def __init__(self, path: str | Path, header: Sequence[str], keep_bytes: int = 0):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if keep_bytes and path.stat().st_size > keep_bytes:
            os.truncate(path, keep_bytes)  # only then: a file with nothing to add keeps its modification time
        self.file = path.open("a" if keep_bytes else "w", newline="", encoding="utf-8")
        if not keep_bytes:
            self.write([header])

    def write(self, rows: Sequence[Sequence[object]]) -> None:
        """Append `rows` and flush them to the operating system (which keeps them if this process dies)."""
        with interrupts_held():
            self.file.write(csv_rows_text(rows))
            self.file.flush()

    def __enter__(self) -> CsvAppender:
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


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
