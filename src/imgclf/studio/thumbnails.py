"""Small square pictures of a project's photos for the data view, made on first request and kept on disk.

A thumbnail is kept in `WORKSPACE/.studio/thumbnails/` under a name made from the photo's path, size and
modification time, so a photo that changes gets a new one and an unchanged one is never decoded twice. It is
decoded as uploads are (`open_image_bytes`: only the formats imgclf reads, the pixel limit checked in the header,
JPEGs drafted straight to about the thumbnail's size), then centre-cropped to a square.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from imgclf.data.images import open_image_bytes
from imgclf.files import atomic_write_bytes

THUMBNAIL_SIZE = 192
"""The side of a thumbnail in pixels: a grid cell of 96 CSS pixels on a screen of twice the density."""
THUMBNAIL_VERSION = 1
"""Bump when thumbnails are made differently: the old ones are then never used again."""
JPEG_QUALITY = 80


def thumbnail_folder(workspace_root: Path) -> Path:
    """Where the workspace's thumbnails are kept (a hidden folder, never taken for a project)."""
    return workspace_root / ".studio" / "thumbnails"


def thumbnail_key(photo: Path) -> str:
    """The name of `photo`'s thumbnail as the photo is now: a hash of its path, size and modification time."""
    facts = os.stat(photo)
    text = f"{THUMBNAIL_VERSION}\0{THUMBNAIL_SIZE}\0{os.path.abspath(photo)}\0{facts.st_size}\0{facts.st_mtime_ns}"
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()


def make_thumbnail(data: bytes, name: str, max_pixels: int) -> bytes:
    """The JPEG thumbnail of the image in `data`; raises `ImageError` (naming `name`) when it cannot be read."""
    picture = open_image_bytes(data, THUMBNAIL_SIZE, name=name, max_pixels=max_pixels, resize="crop")
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def kept_thumbnail(photo: Path, folder: Path) -> tuple[bytes | None, str]:
    """The thumbnail kept in `folder` for `photo` as it is now, or None, and its key (an ETag)."""
    key = thumbnail_key(photo)
    try:
        return (folder / key[:2] / f"{key}.jpg").read_bytes(), key
    except FileNotFoundError:
        return None, key


def thumbnail(photo: Path, folder: Path, max_pixels: int, name: str) -> tuple[bytes, str]:
    """The JPEG thumbnail of `photo` and its key (an ETag), made and kept in `folder` if the photo is new or changed.

    `name` stands for the photo in errors: `ImageError` when it cannot be read, over `max_pixels` included.
    """
    data, key = kept_thumbnail(photo, folder)
    if data is None:
        data = make_thumbnail(photo.read_bytes(), name, max_pixels)
        atomic_write_bytes(folder / key[:2] / f"{key}.jpg", data, durable=False)
    return data, key
