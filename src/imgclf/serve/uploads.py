"""Reading the images out of a request, within the upload limits, and decoding them to the model's input."""

from __future__ import annotations

import ctypes
import io

import torch
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from imgclf.config import Preprocessing
from imgclf.data.images import (
    UPLOAD_FORMATS,
    ImageError,
    TooManyPixelsError,
    UnsupportedImageError,
    image_to_tensor,
    open_image_bytes,
)
from imgclf.serve.options import FEWER_PIXELS, MB, SHRINK, ServeOptions, upload_limit

Upload = tuple[str, bytes]
"""An uploaded image: the client's file name (only ever a label) and its bytes."""

# glibc keeps the memory a large decode freed in the decoding thread's arena for later: after three 1-bit PNGs
# of 6,300 x 6,300, 250 MB stayed with the server. `malloc_trim` gives it back (0.1-3 ms; after every small
# image it would slow decoding by half). None where the C library has no such call.
LARGE_IMAGE_PIXELS = 4_000_000
_malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", None)


def _too_large(options: ServeOptions, batch: bool) -> HTTPException:
    if not batch:
        return HTTPException(413, f"The upload is larger than {upload_limit(options)}. {SHRINK}.")
    files, limit = options.max_batch_files, options.max_upload_bytes
    return HTTPException(
        413,
        f"The request is larger than a batch may be: {files} images of at most {limit / MB:g} MB "
        f"({files * limit} bytes in all). Send fewer or smaller images, or start the server with a larger "
        "--max-upload-mb.",
    )


def _limit_body(request: Request, limit: int, too_large: HTTPException) -> Request:
    """`request` reading at most `limit` body bytes: over it, by Content-Length or by count, raises `too_large`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise too_large
        return message

    return Request(request.scope, receive)


async def read_uploads(request: Request, options: ServeOptions, batch: bool) -> list[Upload]:
    """The (name, bytes) of each image in the request: the multipart field `files` for a batch, else `file` or
    the raw body. Raises `HTTPException` 413 over the upload limits, 400 for a request without an image."""
    field_name = "files" if batch else "file"
    files = options.max_batch_files if batch else 1
    body_limit = options.max_upload_bytes * files
    request = _limit_body(request, body_limit, _too_large(options, batch))
    multipart = request.headers.get("content-type", "").lower().startswith("multipart/form-data")
    try:
        if not multipart:
            if batch:
                raise HTTPException(400, "Send the images as multipart/form-data fields named `files`.")
            return [("<request body>", await request.body())]
        async with request.form(max_files=files, max_fields=files, max_part_size=64 * 1024) as form:
            uploads = [value for value in form.getlist(field_name) if isinstance(value, UploadFile)]
            if not uploads:
                raise HTTPException(
                    400, f"No file in the multipart field `{field_name}`. Send the image(s) as `{field_name}`."
                )
            return [(upload.filename or "<unnamed>", await upload.read()) for upload in uploads]
    except ClientDisconnect:
        raise HTTPException(400, "The client disconnected before the upload was complete.") from None


def open_upload(
    data: bytes, name: str, options: ServeOptions, preprocessing: Preprocessing | None = None
) -> Image.Image:
    """`open_image_bytes` within the service's pixel limit; over it, the error says which option raises it.

    The image is brought to the model's input as `preprocessing` says; None keeps it at its own size.
    After an image of more than `LARGE_IMAGE_PIXELS`, the memory decoding it took goes back to the system.
    """
    prep = preprocessing or Preprocessing()
    size = None if preprocessing is None else prep.image_size
    try:
        image = open_image_bytes(
            data,
            size,
            prep.interpolation,
            name=name,
            max_pixels=options.max_pixels,
            resize=prep.resize,
            pad_color=prep.pad_color,
        )
    except TooManyPixelsError as error:
        raise TooManyPixelsError(name, f"{error.reason}. {FEWER_PIXELS}") from None
    if _malloc_trim is not None and _pixels(data) > LARGE_IMAGE_PIXELS:
        _malloc_trim(0)
    return image


def _pixels(data: bytes) -> int:
    """The pixels the header of an image already opened once says it has."""
    with Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS) as image:
        return image.width * image.height


def decode_upload(
    data: bytes, name: str, preprocessing: Preprocessing, options: ServeOptions
) -> torch.Tensor | ImageError:
    """The image in `data` as the model's uint8 input (3, S, S), or the `ImageError` saying why it cannot be."""
    # Only a batch can hold an image over the limit (a single upload's body is refused beyond it); there it
    # gets an error like an unreadable image, so the other images are still answered.
    if len(data) > options.max_upload_bytes:
        return ImageError(name, f"larger than {upload_limit(options)}. {SHRINK}")
    try:
        image = open_upload(data, name, options, preprocessing)
    except ImageError as error:
        return error
    return image_to_tensor(image)


def unreadable(error: ImageError) -> HTTPException:
    """The answer to a single image that cannot be read: 415 for a format the service does not read, 413 for one
    over the pixel limit, else 400."""
    status = {UnsupportedImageError: 415, TooManyPixelsError: 413}.get(type(error), 400)
    return HTTPException(status, f"{error}.")
