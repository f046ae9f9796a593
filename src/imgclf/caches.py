"""The inventory and clearing of imgclf's cache folders under `$IMGCLF_CACHE` (default `~/.cache/imgclf`).

imgclf cache                                  # folder, files and size of each cache
imgclf cache --clear decoded                  # empty the decoded-image cache
imgclf cache --clear all --older-than 30      # delete only the entries written more than 30 days ago

The kinds are `features` (a frozen backbone's features, `features.py`), `decoded` (decoded, resized images,
`decoded_cache.py`) and `onnx` (ONNX exports of runs, `export.py`). Every entry is cheap to compute again, so
clearing loses only time. Clearing deletes files inside `$IMGCLF_CACHE/<kind>` and nothing else: symbolic links
are deleted as links, never followed.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from imgclf.config import ImgclfError
from imgclf.files import cache_dir

CACHE_KINDS = ("features", "decoded", "onnx")
ALL = "all"
SECONDS_PER_DAY = 24 * 60 * 60
SIZE_UNITS = ("B", "KB", "MB", "GB", "TB")


class CacheError(ImgclfError):
    """A cache kind or age imgclf cannot use, or a cache folder it refuses to delete from."""


@dataclass(frozen=True)
class CacheSize:
    """How many files, and how many bytes, a cache kind holds (or, from `clear_caches`, had deleted)."""

    kind: str
    folder: Path
    files: int
    size_bytes: int


def cache_sizes(kinds: Sequence[str] = CACHE_KINDS) -> list[CacheSize]:
    """The folder, file count and total bytes (file sizes) of each cache kind; a missing folder holds 0 and 0."""
    sizes = []
    for kind in _check_kinds(kinds):
        folder = cache_dir(kind)
        stats = list(_file_stats(folder))
        sizes.append(CacheSize(kind, folder, len(stats), sum(stat.st_size for stat in stats)))
    return sizes


def clear_caches(kind: str = ALL, older_than_days: float | None = None) -> list[CacheSize]:
    """Delete the entries of one cache kind (or of `all`), and the folders they leave empty; returns what went.

    Args:
        kind: `features`, `decoded`, `onnx` or `all`.
        older_than_days: delete only files last written more than this many days ago (reading an entry does not
            make it younger); None deletes every file.

    Raises `CacheError` when `$IMGCLF_CACHE` is `/`, the home folder or a folder above it, or when a kind's folder
    is a symbolic link (clearing would delete files outside the cache root).

    Example: `clear_caches("decoded", older_than_days=30)[0].size_bytes` is the bytes freed in `decoded`.
    """
    kinds = CACHE_KINDS if kind == ALL else _check_kinds([kind])
    _check_older_than(older_than_days)
    root = _safe_cache_root()
    folders = {name: _own_folder(root, name) for name in kinds}  # every check passes before anything is deleted
    cutoff = None if older_than_days is None else time.time() - older_than_days * SECONDS_PER_DAY
    return [_clear_folder(name, folder, cutoff) for name, folder in folders.items()]


def _check_older_than(days: float | None) -> None:
    """`--older-than` is None (every file) or a finite number of days, 0 or more; raises `CacheError` otherwise."""
    if days is not None and not (math.isfinite(days) and days >= 0):
        raise CacheError(
            f"Invalid option --older-than. Received: --older-than={days!r}. Give a number of days, 0 or more, "
            "e.g. --older-than 30 to delete the entries written more than 30 days ago."
        )


def format_size(size_bytes: int) -> str:
    """A byte count as people read it, in powers of 1024: `512 B`, `147.0 KB`, `1.2 GB`."""
    size = float(size_bytes)
    for unit in SIZE_UNITS[:-1]:
        if size < 1024:
            return f"{size_bytes} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} {SIZE_UNITS[-1]}"


def _check_kinds(kinds: Sequence[str]) -> Sequence[str]:
    unknown = [kind for kind in kinds if kind not in CACHE_KINDS]
    if unknown:
        raise CacheError(
            f"Unknown cache kind {unknown[0]!r}. Received: --clear={unknown[0]}. "
            f"Choose one of {', '.join((*CACHE_KINDS, ALL))}."
        )
    return kinds


def _safe_cache_root() -> Path:
    """The resolved cache root, unless it is `/`, the home folder or a folder holding it (deleting there is wrong)."""
    root = cache_dir(CACHE_KINDS[0]).parent.resolve()
    home = Path.home().resolve()
    if home.is_relative_to(root):
        raise CacheError(
            f"Refusing to clear caches in {root}: $IMGCLF_CACHE resolves to "
            f"{'the home folder' if root == home else 'a folder that holds the home folder'}. "
            "Set IMGCLF_CACHE to a folder of its own (e.g. ~/.cache/imgclf), or unset it."
        )
    return root


def _own_folder(root: Path, kind: str) -> Path:
    """`root/kind`, refused when it is a symbolic link: its files would lie outside the cache root."""
    folder = root / kind
    if folder.is_symlink():
        raise CacheError(
            f"Refusing to clear {folder}: it is a symbolic link to {folder.resolve()}, outside {root}. "
            "Delete its files by hand, or point IMGCLF_CACHE at the real folder's parent."
        )
    return folder


def _open_folder(name: str | Path, parent_fd: int | None = None, follow_link: bool = False) -> int | None:
    """A descriptor of the folder `name` (relative to `parent_fd` when given), or None when it is gone or is not
    a folder. Unless `follow_link`, a symbolic link is not a folder: an entry swapped for a link after it was
    listed is never entered."""
    flags = os.O_RDONLY | os.O_DIRECTORY | (0 if follow_link else os.O_NOFOLLOW)
    try:
        return os.open(name, flags, dir_fd=parent_fd)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
        raise


def _walk(folder_fd: int) -> Iterator[tuple[int, os.DirEntry]]:
    """(descriptor of its folder, entry) for everything under the open folder, each sub-folder after what it
    holds; symbolic links are never followed."""
    for entry in list(os.scandir(folder_fd)):
        if entry.is_dir(follow_symlinks=False):
            sub_fd = _open_folder(entry.name, folder_fd)
            if sub_fd is None:  # deleted, or swapped for a link or a file, since it was listed
                continue
            try:
                yield from _walk(sub_fd)
            finally:
                os.close(sub_fd)
        yield folder_fd, entry


def _walk_folder(folder: Path, follow_link: bool) -> Iterator[tuple[int, os.DirEntry]]:
    """`_walk` of `folder`; nothing when it does not exist."""
    folder_fd = _open_folder(folder, follow_link=follow_link)
    if folder_fd is None:
        return
    try:
        yield from _walk(folder_fd)
    finally:
        os.close(folder_fd)


def _file_stats(folder: Path) -> Iterator[os.stat_result]:
    """The lstat of every file and symbolic link under `folder` (itself may be a link; links under it are not
    followed)."""
    for _, entry in _walk_folder(folder, follow_link=True):
        if entry.is_dir(follow_symlinks=False):
            continue
        try:
            yield entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # deleted meanwhile, e.g. by another `imgclf cache --clear`
            continue


def _clear_folder(kind: str, folder: Path, cutoff: float | None) -> CacheSize:
    """Delete the files under `folder` written before `cutoff` (all when None), and the folders left empty.

    Deleting goes through descriptors of the folders walked (never their paths), so a folder swapped for a link
    while this runs is skipped rather than followed out of the cache.
    """
    files = size_bytes = 0
    for folder_fd, entry in _walk_folder(folder, follow_link=False):
        if entry.is_dir(follow_symlinks=False):
            # Not empty: it holds entries --older-than kept, or one a training run has just written.
            with contextlib.suppress(OSError):
                os.rmdir(entry.name, dir_fd=folder_fd)
            continue
        try:
            stat = entry.stat(follow_symlinks=False)
            if cutoff is not None and stat.st_mtime >= cutoff:
                continue
            os.unlink(entry.name, dir_fd=folder_fd)
        except (FileNotFoundError, IsADirectoryError):  # deleted, or swapped for a folder, since it was listed
            continue
        files += 1
        size_bytes += stat.st_size
    return CacheSize(kind, folder, files, size_bytes)
