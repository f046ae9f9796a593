"""A photo's fingerprint: the SHA-256 of its bytes and the perceptual hash (pHash) of a small decode of them.

The validation split reads them to keep copies of one photo on one side (`folders.stratified_split`), the
audit to report duplicates. pHashes are kept on disk by content, in `$IMGCLF_CACHE/decoded/phash-<key>.bin`
(a cache kind of its own would add nothing: it is cleared with the decoded images); `<key>` names everything
that shapes the hash (imgclf's decode, Pillow, its JPEG library, PyTorch, imagehash), so a second run only reads
and hashes the files' bytes. Misses are decoded in worker processes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import signal
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import imagehash
import numpy as np
import torch
from PIL import Image

from imgclf.config import Preprocessing
from imgclf.data.decoded_cache import decode_key
from imgclf.data.images import ImageError, open_image_bytes
from imgclf.files import atomic_write_bytes, cache_dir

log = logging.getLogger(__name__)

# pHash looks at a 32×32 grey version; decoding to 64×64 (JPEG draft mode gets most of the way for free)
# keeps enough detail for its resize while costing a fraction of a full decode.
DECODE_SIZE = 64
ENTRY_FORMAT = 1
"""The layout of the cache file: records of a 32-byte SHA-256 and an 8-byte little-endian pHash, then a CRC-32."""
_RECORD = 40
_PARALLEL_FROM = 32  # fewer misses than this are decoded here: starting worker processes would cost more

Item = TypeVar("Item")
Result = TypeVar("Result")


def perceptual_hash(picture: Image.Image) -> int:
    """The 64-bit pHash (imagehash) of `picture` as an integer, first bit highest."""
    bits = imagehash.phash(picture).hash.ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def fingerprint(path: str) -> tuple[str | None, int | None]:
    """(SHA-256 hex digest, pHash) of the file `path`, read once.

    The pHash is None when the file is not a readable image; both are None when it cannot be read at all.
    """
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None, None
    try:
        phash = perceptual_hash(open_image_bytes(data, DECODE_SIZE, formats=None, name=path))
    except ImageError:
        phash = None
    return hashlib.sha256(data).hexdigest(), phash


def map_in_processes(function: Callable[[Item], Result], items: Sequence[Item], workers: int) -> Iterator[Result]:
    """`map(function, items)`, in order, in `workers` forked processes where the platform has fork (threads elsewhere).

    Processes, not threads: only Pillow's decode and resize (about 30% of the time on small images) release
    the GIL; the perceptual hash and Pillow's per-file Python work hold it. With both cores of a 2-core machine
    free, two processes audited 1,860-2,270 images/s against 1,020-1,230 for two threads; while other jobs
    kept the cores busy, the two were equal within the noise.
    """
    if workers == 1 or len(items) < 2:
        yield from map(function, items)
        return
    if "fork" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("fork")
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker)
    else:
        pool = ThreadPoolExecutor(workers)
    try:
        yield from pool.map(function, items, chunksize=16)
    finally:
        pool.shutdown(cancel_futures=True)


def _start_worker() -> None:
    """Leave Ctrl-C to the parent process, which stops the pool (workers would only print tracebacks), and resize
    in one thread: the workers already keep every core busy."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


def cache_path() -> Path:
    """The file holding the pHashes computed by this imgclf, Pillow, JPEG library, PyTorch and imagehash."""
    identity = {
        "entry_format": ENTRY_FORMAT,
        "decode": decode_key(Preprocessing(image_size=DECODE_SIZE)),
        "imagehash": imagehash.__version__,
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir("decoded") / f"phash-{key}.bin"


def read_cache(path: Path) -> dict[bytes, int]:
    """The stored pHash of each SHA-256 digest; empty when the file is missing or damaged."""
    try:
        data = path.read_bytes()
    except OSError:
        return {}
    body, checksum = data[:-4], int.from_bytes(data[-4:], "little")
    if len(data) < 4 or len(body) % _RECORD or zlib.crc32(body) != checksum:
        return {}  # damaged: everything is hashed again and the file rewritten
    return {
        body[start : start + 32]: int.from_bytes(body[start + 32 : start + _RECORD], "little")
        for start in range(0, len(body), _RECORD)
    }


def write_cache(path: Path, hashes: dict[bytes, int]) -> None:
    """Store `hashes` (SHA-256 digest to pHash) whole; a cache that cannot be written is only logged."""
    body = b"".join(digest + hashes[digest].to_bytes(8, "little") for digest in sorted(hashes))
    try:
        # Not fsynced: a file lost in a crash is only computed again (the rename still keeps it whole).
        atomic_write_bytes(path, body + zlib.crc32(body).to_bytes(4, "little"), False)
    except OSError as error:
        log.warning("Cannot write the perceptual-hash cache %s (%s); hashing without storing.", path, error)


def fingerprints(paths: Sequence[str], workers: int | None = None) -> list[tuple[str | None, int | None]]:
    """`fingerprint` of each of `paths`, in order, taking the pHash from the cache where the bytes were seen before.

    `workers`: processes decoding the files not in the cache (default: one per CPU core).
    """
    started = time.perf_counter()
    path = cache_path()
    cached = read_cache(path)
    found: list[tuple[str | None, int | None] | None] = []
    for file in paths:
        try:
            digest = hashlib.sha256(Path(file).read_bytes()).digest()
        except OSError:
            found.append((None, None))
            continue
        found.append((digest.hex(), cached[digest]) if digest in cached else None)
    missing = [index for index, known in enumerate(found) if known is None]
    workers = min(workers or os.cpu_count() or 1, max(1, len(missing) // _PARALLEL_FROM))
    # The digest comes from the worker's own read, so a file rewritten meanwhile keeps a matching pair.
    for index, (digest, phash) in zip(missing, map_in_processes(fingerprint, [paths[i] for i in missing], workers)):
        found[index] = digest, phash
        if digest is not None and phash is not None:
            cached[bytes.fromhex(digest)] = phash
    if any(found[index][1] is not None for index in missing):
        write_cache(path, cached)
    seconds = time.perf_counter() - started
    log.debug("Fingerprinted %d files (%d decoded) in %.2f s", len(paths), len(missing), seconds)
    return found
