"""An on-disk cache of decoded, resized images, so that a second run reads pixels instead of decoding photos.

imgclf train photos/training_set --val photos/val_set                      # decodes and stores, or reads
imgclf train photos/training_set --val photos/val_set --no-decode-cache    # decodes every image every run

Each image is stored under the SHA-256 of its file's bytes, in a folder named after everything else that
shapes its pixels: image size, interpolation, resize mode (squash, crop, pad) and pad colour, imgclf's
`DECODE_VERSION`, the versions of Pillow, its JPEG library and PyTorch (which resizes). An edited photo is
decoded again; a renamed, moved or copied one is not.
The folder is `$IMGCLF_CACHE/decoded/<key>/<digest[:2]>/<digest>.pixels` (default `~/.cache/imgclf/decoded`);
deleting it at any time only costs decoding again. An entry is the image's uint8 pixels as (3, S, S) channel
planes, then their CRC-32: 12 KB at 64 px, 147 KB at 224 px. `bench/decoded_cache.py` measures reading one
(hashing the photo included) at about a tenth to a twentieth of the time decoding it takes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import threading
import zlib
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import features

from imgclf.config import Preprocessing
from imgclf.data.images import DECODE_VERSION, decode_tensor, load_tensor
from imgclf.files import atomic_write_bytes, cache_dir

log = logging.getLogger(__name__)
_write_failure = threading.Lock()  # threads that fail to write at once still warn only once

ENTRY_FORMAT = 1
"""The layout of an entry file; part of the folder's key, so another layout never reads these."""


def cache_root() -> Path:
    """Where decoded images live: `$IMGCLF_CACHE/decoded`, else `~/.cache/imgclf/decoded`."""
    return cache_dir("decoded")


def decode_key(preprocessing: Preprocessing) -> str:
    """A short, stable name for everything but the file's bytes that decides the decoded pixels.

    Mean and std are left out: they apply to the stored pixels later, so models that share a size, an
    interpolation and a resize mode share entries.
    """
    identity = {
        "entry_format": ENTRY_FORMAT,
        "decode_version": DECODE_VERSION,
        "image_size": preprocessing.image_size,
        "interpolation": preprocessing.interpolation,
        "resize": preprocessing.resize,
        "pad_color": list(preprocessing.pad_color),
        "pillow": PIL.__version__,
        "torch": torch.__version__,  # it resizes
        "jpeg": [features.version("jpg"), features.version("libjpeg_turbo")],
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


class DecodedCache:
    """Decoded uint8 images of one preprocessing, one file per image content.

    Holds only plain values (its folder, preprocessing and whether writing works), so it pickles into
    DataLoader workers; any number of threads and processes may read and fill it at once (entries are
    renamed into place whole).
    """

    def __init__(self, preprocessing: Preprocessing, folder: Path | None = None):
        self.preprocessing = preprocessing
        self.folder = folder if folder is not None else cache_root() / decode_key(preprocessing)
        self.writable = True
        self._checked = False

    def check_writable(self) -> bool:
        """Whether new entries can be stored, tried once by creating a file in the folder.

        Call it before worker processes get copies of this cache: a folder that cannot be written is then
        warned about once, here, and the copies never try, instead of each worker warning on its own.
        """
        if self.writable and not self._checked:
            self._checked = True
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryFile(dir=self.folder):
                    pass
            except OSError as error:
                self._stop_writing(error)
        return self.writable

    def load(self, path: str) -> tuple[torch.Tensor, bool]:
        """`load_tensor(path)`, and whether it came from the cache; on a miss the image is decoded and stored.

        Raises `ImageError`, with `load_tensor`'s reasons, for a file that cannot be read; those are never
        stored, so they are tried again (and reported again) on the next run.
        """
        try:
            data = Path(path).read_bytes()
        except OSError:
            return load_tensor(path, self.preprocessing), False  # raises the ImageError saying why
        # One read serves the hash and the decoder, so a file rewritten meanwhile cannot be stored under
        # the digest of its former bytes.
        digest = hashlib.sha256(data).hexdigest()
        cached = self.get(digest)
        if cached is not None:
            return cached, True
        image = decode_tensor(data, self.preprocessing, path)
        self.put(digest, image)
        return image, False

    def _path(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.pixels"

    def get(self, digest: str) -> torch.Tensor | None:
        """The stored (3, S, S) image of the file whose SHA-256 is `digest`, or None when absent or damaged."""
        size = self.preprocessing.image_size
        length = size * size * 3
        buffer = bytearray(length + 5)  # a byte more than an entry, so that a longer file shows as damaged
        try:
            with open(self._path(digest), "rb") as file:
                count = file.readinto(buffer)
        except OSError:
            return None
        checksum = int.from_bytes(buffer[length : length + 4], "little")
        if count != length + 4 or zlib.crc32(memoryview(buffer)[:length]) != checksum:
            return None  # a damaged entry is decoded again and overwritten, never trusted
        return torch.frombuffer(buffer, dtype=torch.uint8, count=length).view(3, size, size)

    def put(self, digest: str, image: torch.Tensor) -> None:
        """Store a (3, S, S) uint8 image; a cache folder that cannot be written is warned about once, then left."""
        if not self.writable:
            return
        # Stored as channel planes, which batches copy 10× faster than `load_tensor`'s channels-last view.
        pixels = np.ascontiguousarray(image.numpy())
        try:
            # Not fsynced: an entry lost in a crash is only decoded again (the rename still keeps it whole).
            atomic_write_bytes(self._path(digest), pixels.tobytes() + zlib.crc32(pixels).to_bytes(4, "little"), False)
        except OSError as error:
            self._stop_writing(error)

    def _stop_writing(self, error: OSError) -> None:
        with _write_failure:
            if not self.writable:
                return
            self.writable = False
        log.warning("Cannot write the decoded-image cache %s (%s); decoding without storing.", self.folder, error)
