"""Opening one image safely: EXIF orientation, every mode to RGB, fast JPEG draft decode, clear errors; then
bringing it to the model's square input by squashing, centre-cropping or padding it (`Preprocessing.resize`)."""

from __future__ import annotations

import base64
import io
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from imgclf.config import DEFAULT_PAD_COLOR, ImgclfError, Preprocessing

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
UPLOAD_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
"""The Pillow formats of `IMAGE_EXTENSIONS`: all `open_image_bytes` accepts by default."""
DECODE_VERSION = 2
"""Bump when `open_image` returns other pixels for the same file: it keys the decoded-image and feature caches."""

_RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


class ImageError(ImgclfError):
    """An image file cannot be decoded; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"Cannot read image {path}: {reason}")
        self.path = str(path)
        self.reason = reason


class UnsupportedImageError(ImageError):
    """The bytes are in no image format imgclf reads, as opposed to a damaged image of a format it reads."""


class TooManyPixelsError(ImageError):
    """The image has more pixels than the `max_pixels` of `open_image_bytes` allow; told by its header."""


class _OverPixelBudget(Exception):
    """Raised by `_decode`; `_decoding` turns it into a `TooManyPixelsError` naming the image."""


def is_image_file(path: str | Path) -> bool:
    """True when the file name has one of the image extensions imgclf reads (any case)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _high_depth_to_rgb(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    pixels = np.asarray(image).astype(np.float32)
    if image.mode == "F" and pixels.max(initial=0.0) <= 1.0:
        pixels = pixels * 255.0
    elif image.mode.startswith("I;16") or pixels.max(initial=0.0) > 255.0:
        pixels = pixels / 257.0  # 16-bit range onto 8-bit, even when a dark image's values fit in 8
    gray = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="L")
    return gray.convert("RGB")


def open_image(
    path: str | Path,
    size: int | None = None,
    interpolation: str = "bilinear",
    resize: str = "squash",
    pad_color: tuple[int, int, int] = DEFAULT_PAD_COLOR,
) -> Image.Image:
    """Decode `path` to an RGB image, upright as its EXIF orientation says, brought to `size`² if given.

    `resize` says how ("squash", "crop" or "pad" with `pad_color`: see `Preprocessing`). Large JPEGs are
    decoded in draft mode straight to about the needed size. Raises `ImageError` naming the file for an empty,
    truncated, corrupt or non-image file, and for a decompression bomb.
    """
    path = Path(path)
    with _decoding(path):
        if path.stat().st_size == 0:
            raise ImageError(path, "empty file (0 bytes)")
        with Image.open(path) as image:
            _warn_if_large(path, image)
            return _decode(image, _target(size, interpolation, resize, pad_color))


LARGE_IMAGE_PIXELS = 40_000_000
"""Above this many pixels an image costs seconds and gigabytes to decode: a file read from disk is warned of."""


def _warn_if_large(path: Path, image: Image.Image) -> None:
    width, height = image.size  # from the header: nothing is decoded yet
    if width * height > LARGE_IMAGE_PIXELS and image.format != "JPEG":  # JPEGs decode in draft mode, reduced
        log.warning("%s (%d×%d) is over 40 M pixels: decoding it is slow and takes much memory.", path, width, height)


def open_image_bytes(
    data: bytes,
    size: int | None = None,
    interpolation: str = "bilinear",
    formats: tuple[str, ...] | None = UPLOAD_FORMATS,
    name: str = "<upload>",
    max_pixels: int | None = None,
    resize: str = "squash",
    pad_color: tuple[int, int, int] = DEFAULT_PAD_COLOR,
) -> Image.Image:
    """`open_image` for an image held in memory (an upload), accepting only the Pillow `formats` given.

    Restricting the formats keeps Pillow's rarer decoders (EPS runs Ghostscript) away from untrusted bytes;
    None accepts every format, as `open_image` does.
    max_pixels: the most pixels decoding may produce, a tighter bound on its time and memory than Pillow's
    decompression-bomb limit; the header tells the size, so an image over it is refused before any pixel is
    decoded. A JPEG drafted to about `size` counts at its reduced size. None: Pillow's limit only.
    Raises `UnsupportedImageError` when the bytes are none of `formats`, `TooManyPixelsError` over
    `max_pixels`, `ImageError` when they are empty, damaged or a decompression bomb; `name` stands for the
    bytes in the message.
    """
    with _decoding(name, formats):
        if not data:
            raise ImageError(name, "empty file (0 bytes)")
        with Image.open(io.BytesIO(data), formats=formats) as image:
            return _decode(image, _target(size, interpolation, resize, pad_color), max_pixels)


@contextmanager
def _decoding(name: str | Path, formats: tuple[str, ...] | None = None) -> Iterator[None]:
    """Turn every way decoding can fail into an `ImageError` naming `name`, decompression-bomb warnings included."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except ImageError:
        raise
    except _OverPixelBudget as error:
        raise TooManyPixelsError(name, str(error)) from None
    except UnidentifiedImageError:
        kinds = "an image Pillow can identify" if formats is None else f"a {', '.join(formats)} image"
        raise UnsupportedImageError(name, f"not {kinds} (corrupt, or another kind of file)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(
            name, f"refused as a possible decompression bomb ({error}); resize it if it is a real photo"
        ) from None
    except FileNotFoundError:
        raise ImageError(name, "no such file") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageError(name, f"corrupt or truncated ({error})") from None


def decode_image(
    image: Image.Image,
    size: int | None = None,
    interpolation: str = "bilinear",
    resize: str = "squash",
    pad_color: tuple[int, int, int] = DEFAULT_PAD_COLOR,
) -> Image.Image:
    """Like `open_image`, for an image already opened (for example an upload)."""
    with _decoding("<in-memory image>"):
        return _decode(image, _target(size, interpolation, resize, pad_color))


def _target(size: int | None, interpolation: str, resize: str, pad_color: tuple[int, int, int]) -> Preprocessing | None:
    """The input to bring a decoded image to (mean and std play no part), or None to keep its own size."""
    if size is None:
        return None
    return Preprocessing(size, interpolation=interpolation, resize=resize, pad_color=tuple(pad_color))


def _decode(image: Image.Image, target: Preprocessing | None, max_pixels: int | None = None) -> Image.Image:
    # Checked here as well as by the warnings filter of `_decoding`, which is process-wide: another thread
    # leaving its own `catch_warnings` can reset the filter while this one decodes.
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and image.width * image.height > limit:
        raise Image.DecompressionBombError(f"{image.width}x{image.height} pixels, over the limit of {limit}")
    if target is not None and image.format == "JPEG":
        image.draft("RGB", _draft_size(image.width, image.height, target))
    if max_pixels is not None and image.width * image.height > max_pixels:
        raise _OverPixelBudget(f"{image.width}x{image.height} pixels, over the limit of {max_pixels} pixels")
    image.load()
    image = ImageOps.exif_transpose(image)
    image = _to_rgb(image)
    return image if target is None else _fit(image, target)


Box = tuple[int, int, int, int]
"""(left, top, right, bottom) in pixels, right and bottom excluded, as Pillow's boxes."""


@dataclass(frozen=True)
class Placement:
    """Where an image lands in the model's square input: its box `seen` is scaled onto the input's box `filled`.

    Outside `seen` the model sees nothing of the image (crop's cut-off sides); outside `filled` the input is
    the pad colour (pad's bars).
    """

    seen: Box
    filled: Box


def _squashed(width: int, height: int, size: int) -> Placement:
    return Placement((0, 0, width, height), (0, 0, size, size))


def _cropped(width: int, height: int, size: int) -> Placement:
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return Placement((left, top, left + side, top + side), (0, 0, size, size))


def _padded(width: int, height: int, size: int) -> Placement:
    scale = size / max(width, height)
    inner_width, inner_height = max(1, round(width * scale)), max(1, round(height * scale))
    left, top = (size - inner_width) // 2, (size - inner_height) // 2
    return Placement((0, 0, width, height), (left, top, left + inner_width, top + inner_height))


_PLACEMENTS: dict[str, Callable[[int, int, int], Placement]] = {
    "squash": _squashed,
    "crop": _cropped,
    "pad": _padded,
}


def placement(width: int, height: int, preprocessing: Preprocessing) -> Placement:
    """Where a `width`×`height` image lands in the input of `preprocessing` (its `resize` and `image_size`).

    >>> placement(600, 400, Preprocessing(image_size=60, resize="crop"))
    Placement(seen=(100, 0, 500, 400), filled=(0, 0, 60, 60))
    >>> placement(600, 400, Preprocessing(image_size=60, resize="pad"))
    Placement(seen=(0, 0, 600, 400), filled=(0, 10, 60, 50))
    """
    return _PLACEMENTS[preprocessing.resize](width, height, preprocessing.image_size)


def describe_resize(preprocessing: Preprocessing) -> str:
    """How an image becomes the square input, in words, for files other runtimes read (the ONNX metadata).

    >>> describe_resize(Preprocessing(image_size=224, resize="crop"))
    'the short side scaled to 224 and the centre 224x224 square kept, with bilinear resampling'
    """
    size, how = preprocessing.image_size, preprocessing.resize
    words = {
        "squash": f"the whole image squashed to {size}x{size}",
        "crop": f"the short side scaled to {size} and the centre {size}x{size} square kept",
        "pad": f"the long side scaled to {size}, centred on a {size}x{size} square of RGB "
        f"{','.join(map(str, preprocessing.pad_color))}",
    }[how]
    return f"{words}, with {preprocessing.interpolation} resampling"


def _draft_size(width: int, height: int, preprocessing: Preprocessing) -> tuple[int, int]:
    """The least size a `width`×`height` JPEG may be drafted to and still give the input all its pixels: the
    part the model sees must cover the box it fills (crop: the short side at least `image_size`)."""
    where = placement(width, height, preprocessing)
    (seen_width, seen_height), (filled_width, filled_height) = _extent(where.seen), _extent(where.filled)
    return math.ceil(filled_width * width / seen_width), math.ceil(filled_height * height / seen_height)


def _extent(box: Box) -> tuple[int, int]:
    return box[2] - box[0], box[3] - box[1]


def _fit(image: Image.Image, preprocessing: Preprocessing) -> Image.Image:
    """An RGB `image` brought to the model's square input as `preprocessing.resize` says (see `placement`)."""
    size = preprocessing.image_size
    if image.size == (size, size):
        return image  # every mode leaves a square of the input's size as it is
    where = placement(image.width, image.height, preprocessing)
    scaled = _resize(image, where.seen, _extent(where.filled), preprocessing.interpolation)
    if where.filled == (0, 0, size, size):
        return scaled
    canvas = Image.new("RGB", (size, size), tuple(preprocessing.pad_color))
    canvas.paste(scaled, where.filled[:2])
    return canvas


def _resize(image: Image.Image, box: Box, size: tuple[int, int], interpolation: str) -> Image.Image:
    """Scale the `box` of an RGB `image` to `size` (width, height), antialiased as Pillow does it, by PyTorch's
    uint8 kernels where they exist: 0.3–0.4 ms against Pillow's 1.1–2 ms for a 510×340 photo, with the same
    pixels to within 1 level (rare bicubic overshoots up to 12)."""
    if interpolation not in ("bilinear", "bicubic"):
        return image.resize(size, _RESAMPLING[interpolation], box=box, reducing_gap=None)
    if box != (0, 0, *image.size):
        image = image.crop(box)  # a contiguous copy: PyTorch's fast uint8 kernel needs one (3× slower on a view)
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).unsqueeze(0)
    resized = F.interpolate(pixels, size=size[::-1], mode=interpolation, antialias=True)
    return Image.fromarray(resized[0].permute(1, 2, 0).numpy())


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a uint8 tensor of shape (3, H, W)."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def load_tensor(path: str | Path, preprocessing: Preprocessing) -> torch.Tensor:
    """Decode `path` to the model's input as a uint8 tensor of shape (3, S, S)."""
    prep = preprocessing
    return image_to_tensor(open_image(path, prep.image_size, prep.interpolation, prep.resize, prep.pad_color))


def decode_tensor(data: bytes, preprocessing: Preprocessing, name: str) -> torch.Tensor:
    """`load_tensor` for the bytes of the image file `name`, already read: the same pixels, the same errors."""
    prep = preprocessing
    image = open_image_bytes(
        data, prep.image_size, prep.interpolation, None, name, resize=prep.resize, pad_color=prep.pad_color
    )
    return image_to_tensor(image)


def image_tensor(image: Image.Image, preprocessing: Preprocessing) -> torch.Tensor:
    """`load_tensor` for an image already opened (a PIL image given to predict or explain)."""
    prep = preprocessing
    return image_to_tensor(decode_image(image, prep.image_size, prep.interpolation, prep.resize, prep.pad_color))


def normalize(batch: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """Turn a uint8 or [0, 1] float batch (N, 3, H, W) into the model's normalised float input."""
    if batch.dtype == torch.uint8:
        batch = batch.float().div_(255.0)
    mean = torch.tensor(preprocessing.mean, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing.std, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    return (batch - mean) / std


def thumbnail_uri(image: Image.Image, size: int) -> str:
    """A JPEG thumbnail of `image` (at most `size` px on its long side) as a `data:` URI, for self-contained HTML."""
    thumbnail = image.convert("RGB")
    thumbnail.thumbnail((size, size))
    buffer = io.BytesIO()
    thumbnail.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def file_thumbnail_uri(path: str | Path, size: int) -> str | None:
    """`thumbnail_uri` of the upright image in `path`, or None when it cannot be read."""
    try:
        return thumbnail_uri(open_image(path), size)
    except ImageError:
        return None
