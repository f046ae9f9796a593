"""Reading image files once each: content hash, format, upright size, perceptual hash and looks, in worker processes."""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from imgclf.audit.quality import Looks, measure_looks
from imgclf.data.fingerprints import DECODE_SIZE, map_in_processes, perceptual_hash
from imgclf.data.images import ImageError, decode_image

# The formats Pillow reports for each extension; MPO is how Pillow names camera JPEGs with extra frames.
EXTENSION_FORMATS = {
    ".jpg": ("JPEG", "MPO"),
    ".jpeg": ("JPEG", "MPO"),
    ".png": ("PNG",),
    ".bmp": ("BMP",),
    ".gif": ("GIF",),
    ".webp": ("WEBP",),
    ".tif": ("TIFF",),
    ".tiff": ("TIFF",),
}
_ROTATED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_EXIF_ORIENTATION = 0x0112


@dataclass
class FileFacts:
    """What one read of a file tells: size, content hash, and for a readable image its format and looks."""

    path: str
    size_bytes: int
    content_hash: str
    format: str | None = None
    mode: str | None = None
    width: int | None = None
    height: int | None = None
    perceptual_hash: int | None = None
    looks: Looks | None = None
    error: str | None = None


@dataclass
class AuditedFile:
    """One image file of a split: where it sits (`name` is relative to the split's folder) and its facts."""

    split: str
    class_name: str
    name: str
    facts: FileFacts

    @property
    def path(self) -> str:
        """The path as found under the split's folder."""
        return self.facts.path

    @property
    def readable(self) -> bool:
        """True when the file decoded as an image."""
        return self.facts.error is None

    def display_name(self) -> str:
        """`split: class/file` as shown to the user."""
        return f"{self.split}: {self.name}"


def extension_matches(path: str | Path, image_format: str) -> bool:
    """True when the file's extension is one of the names of `image_format` (.jpg or .jpeg for JPEG, ...)."""
    return image_format in EXTENSION_FORMATS.get(Path(path).suffix.lower(), ())


def inspect_file(path: str | Path) -> FileFacts:
    """Read `path` once: content hash, format, mode, upright width and height, perceptual hash and looks.

    An unreadable, empty, corrupt or truncated file gets `error` set to the reason instead of raising.
    A truncated JPEG is caught by decoding it to the end; a PNG's chunk checksums are verified as well.
    """
    path = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        return FileFacts(path, 0, "", error=f"cannot read the file ({error.strerror or error})")
    facts = FileFacts(path, len(data), hashlib.blake2b(data, digest_size=16).hexdigest())
    if not data:
        facts.error = "empty file (0 bytes)"
        return facts
    try:
        image = Image.open(io.BytesIO(data))
        facts.format, facts.mode = image.format, image.mode
        facts.width, facts.height = image.size
        if image.getexif().get(_EXIF_ORIENTATION) in _ROTATED_ORIENTATIONS:
            facts.width, facts.height = facts.height, facts.width
        if image.format == "PNG":
            Image.open(io.BytesIO(data)).verify()
        picture = decode_image(image, DECODE_SIZE)
    except ImageError as error:
        facts.error = error.reason
        return facts
    except UnidentifiedImageError:
        facts.error = "not an image Pillow can identify (corrupt, or another kind of file)"
        return facts
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        facts.error = f"refused as a possible decompression bomb ({error}); resize it if it is a real photo"
        return facts
    except (OSError, ValueError, SyntaxError) as error:
        facts.error = f"corrupt or truncated ({error})"
        return facts
    facts.perceptual_hash = perceptual_hash(picture)
    facts.looks = measure_looks(picture)
    return facts


def inspect_files(
    paths: Sequence[str], workers: int, progress: Callable[[int, int], None] | None = None
) -> list[FileFacts]:
    """`inspect_file` for each of `paths`, in order, with `workers` processes; `progress(done, total)` after each."""
    results = []
    # Set once, before any worker starts and until all have ended (forked workers inherit it): changing
    # warning filters from several threads at once is not safe. It makes Pillow's bomb warning an error.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        for facts in map_in_processes(inspect_file, paths, workers):
            results.append(facts)
            if progress is not None:
                progress(len(results), len(paths))
    return results
