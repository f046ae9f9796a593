"""The web service: `create_app(run)` builds the FastAPI app, `serve(run_dir)` loads a run once and runs uvicorn.

    imgclf serve runs/efficientnet_lite0-20261125-101500 --port 8000
    curl -F file=@plane.jpg http://127.0.0.1:8000/predict

Requests are read and their images decoded on a small pool of threads; the model itself runs on one inference
thread that answers whatever images are waiting in one call (`MicroBatcher`), so concurrent clients share the
cores instead of fighting over them. Every error is JSON, `{"error": "what is wrong and what to do"}`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import io
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from importlib import resources
from importlib.metadata import version
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Message

from imgclf.config import ConfigError, ImgclfError
from imgclf.data.images import ImageError, UnsupportedImageError, image_to_tensor, open_image_bytes
from imgclf.deploy.predictor import Run, load
from imgclf.evaluation.explain import explain_image
from imgclf.serve.batching import MicroBatcher, QueueFull

logger = logging.getLogger(__name__)

MB = 1024 * 1024
STOPPED = "The inference thread has stopped (see the server log); restart the server."
SHRINK = "Send a smaller image, or start the server with a larger --max-upload-mb"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_PORT = 65535
BACKLOG = 2048  # uvicorn's default
# The page loads nothing from elsewhere; the browser enforces it.
PAGE_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src blob:; connect-src 'self'"
)


# The `imgclf serve` option that sets each field, and the field's value for one of the option's units.
COMMAND_LINE_OPTIONS = {
    "max_upload_bytes": ("--max-upload-mb", MB),
    "timeout_s": ("--timeout", 1),
    "max_batch_size": ("--max-batch", 1),
}


def _as_given(field_name: str, value: float) -> tuple[str, str]:
    """The option's name and `name=value` as the user gave them: the command line's for the options it has."""
    if field_name in COMMAND_LINE_OPTIONS:
        option, unit = COMMAND_LINE_OPTIONS[field_name]
        return option, f"{option}={value / unit:g}"
    return f"`{field_name}`", f"{field_name}={value}"


@dataclass(frozen=True)
class ServeOptions:
    """Limits of the web service.

    max_upload_bytes: the largest image accepted (a batch may hold `max_batch_files` of them).
    timeout_s: the most one request may take, from its first byte read to its answer.
    max_batch_size: the most images the model gets in one call.
    max_batch_files: the most images one `/predict/batch` request may hold.
    max_queue: the most images waiting for the model; more are answered 503 (busy, retry).
    decode_threads: threads decoding uploads (also bounds the memory decoding can take); default half the cores.

    A value it cannot use raises `ConfigError` naming the `imgclf serve` option that sets it, in that option's
    unit (`--max-upload-mb`, `--timeout`, `--max-batch`), or the field for the others.
    """

    max_upload_bytes: int = 10 * MB
    timeout_s: float = 10.0
    max_batch_size: int = 8
    max_batch_files: int = 16
    max_queue: int = 64
    # Half the cores: the engine's own threads use them all, and on 2 cores one decoding thread gave 34 against
    # 24-27 requests/s for two (bench/serve_load.py, EfficientNet-Lite0 on OpenVINO).
    decode_threads: int = field(default_factory=lambda: max(1, len(os.sched_getaffinity(0)) // 2))

    def __post_init__(self) -> None:
        for option in dataclasses.fields(self):
            value = getattr(self, option.name)
            if not value > 0:
                name, received = _as_given(option.name, value)
                raise ConfigError(f"{name} must be greater than 0. Received: {received}.")
        if self.max_batch_size > self.max_queue:
            raise ConfigError(
                f"--max-batch must be at most {self.max_queue}, the most images that may wait for the model. "
                f"Received: --max-batch={self.max_batch_size}."
            )
        if self.max_batch_files > self.max_queue:
            raise ConfigError(
                "`max_queue` must hold a whole batch request: at least `max_batch_files`. "
                f"Received: max_queue={self.max_queue}, max_batch_files={self.max_batch_files}."
            )


class PredictionOut(BaseModel):
    """One image's answer; below the run's `--min-confidence` the label is `unsure` and the index null."""

    label: str
    index: int | None
    probability: float
    probabilities: dict[str, float]
    model: str
    latency_ms: float


class BatchItem(BaseModel):
    """One image of a batch: its prediction, or `error` when it could not be read or is over the size limit."""

    file: str
    label: str | None = None
    index: int | None = None
    probability: float | None = None
    probabilities: dict[str, float] | None = None
    error: str | None = None


class BatchOut(BaseModel):
    """The answers to a batch, in the order the files were sent."""

    predictions: list[BatchItem]
    model: str
    latency_ms: float


class Health(BaseModel):
    """The service is up; how much work it has done and has waiting."""

    status: str
    model: str
    waiting: int
    batches: int
    images: int


class PreprocessingOut(BaseModel):
    """How an image becomes the model's input."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str


class Limits(BaseModel):
    """The service's limits (see `ServeOptions`)."""

    max_upload_bytes: int
    max_batch_files: int
    timeout_s: float


class ModelInfo(BaseModel):
    """The model behind the service."""

    model: str
    run: str
    engine: str
    classes: list[str]
    preprocessing: PreprocessingOut
    limits: Limits


class ErrorOut(BaseModel):
    """What went wrong and what to do about it."""

    error: str


ERRORS = {
    status: {"model": ErrorOut, "description": description}
    for status, description in {
        400: "Empty, corrupt or truncated image, decompression bomb, or no file in the request",
        408: "The upload did not arrive within the timeout",
        413: "Upload over the size limit",
        415: "Not an image format the service reads",
        500: "The model failed (see the server log)",
        501: "Grad-CAM cannot explain this model (it has no spatial feature map)",
        503: "Too many images waiting (retry), or the inference thread stopped",
        504: "No answer within the timeout",
    }.items()
}


EXPLAINED = {200: {"content": {"image/png": {}}, "description": "The photo with the Grad-CAM heat map over it"}}
EXPLAIN_SIDE = 512


def _body(fields: dict) -> dict:
    return {"requestBody": {"required": True, "content": fields}}


BINARY = {"type": "string", "format": "binary"}
SINGLE_BODY = _body(
    {
        "multipart/form-data": {"schema": {"type": "object", "properties": {"file": BINARY}, "required": ["file"]}},
        "image/*": {"schema": BINARY},
        "application/octet-stream": {"schema": BINARY},
    }
)
BATCH_BODY = _body(
    {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"files": {"type": "array", "items": BINARY}},
                "required": ["files"],
            }
        }
    }
)


def create_app(run: Run, options: ServeOptions | None = None) -> FastAPI:
    """The FastAPI app serving `run`: `/predict`, `/predict/batch`, `/health`, `/model`, the page `/`, `/docs`.

    The inference thread starts and warms the model up with the app's lifespan (uvicorn, or
    `with TestClient(app)`), and stops with it.

    >>> app = create_app(imgclf.load("runs/seed-cnn-20261125-101500"), ServeOptions(timeout_s=5))
    """
    options = options or ServeOptions()
    batcher = MicroBatcher(run.predict_tensors, options.max_batch_size, options.max_queue)
    decoders = ThreadPoolExecutor(options.decode_threads, thread_name_prefix="imgclf-decode")
    # Grad-CAM runs the PyTorch model with gradients: one image at a time, beside the prediction path.
    explainer = ThreadPoolExecutor(1, thread_name_prefix="imgclf-explain")
    preprocessing = run.preprocessing
    model_name = run.config.train.model
    page = resources.files("imgclf.serve").joinpath("static/index.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        try:
            size = preprocessing.image_size
            blank = torch.zeros(3, size, size, dtype=torch.uint8)
            await asyncio.gather(*map(asyncio.wrap_future, batcher.submit([blank] * options.max_batch_size)))
            yield
        finally:
            batcher.stop()
            decoders.shutdown()
            explainer.shutdown()

    app = FastAPI(
        title="imgclf",
        summary=f"Image classifier {model_name} ({', '.join(run.class_names)})",
        version=version("imgclf"),
        lifespan=lifespan,
    )

    @app.exception_handler(HTTPException)
    async def error_as_json(request: Request, error: HTTPException) -> JSONResponse:
        message = error.detail
        if error.status_code == 404:
            message = f"Nothing at {request.url.path}. The endpoints are listed at /docs."
        elif error.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}. The endpoints are listed at /docs."
        return JSONResponse({"error": message}, status_code=error.status_code, headers=error.headers)

    def decode(data: bytes, name: str) -> torch.Tensor | ImageError:
        # Only a batch can hold an image over the limit (a single upload's body is refused beyond it); there it
        # gets an error like an unreadable image, so the other images are still answered.
        if len(data) > options.max_upload_bytes:
            return ImageError(name, f"larger than {_upload_limit(options)}. {SHRINK}")
        try:
            image = open_image_bytes(data, preprocessing.image_size, preprocessing.interpolation, name=name)
        except ImageError as error:
            return error
        return image_to_tensor(image)

    async def decode_all(uploads: Sequence[tuple[str, bytes]]) -> list[torch.Tensor | ImageError]:
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*(loop.run_in_executor(decoders, decode, data, name) for name, data in uploads))

    async def infer(images: Sequence[torch.Tensor]) -> list[list[float]]:
        if not batcher.alive:
            raise HTTPException(503, STOPPED)
        try:
            futures = batcher.submit(images)
        except QueueFull as error:
            raise HTTPException(
                503, f"The server is busy: {error}. Retry in a moment.", headers={"Retry-After": "1"}
            ) from None
        try:
            return await asyncio.gather(*map(asyncio.wrap_future, futures))
        except Exception as error:  # the model's own failure, already logged by the inference thread
            raise HTTPException(500, f"The model failed on this image ({error!r}); see the server log.") from None

    def describe(row: list[float]) -> dict:
        prediction = run.prediction_from(torch.tensor(row))
        return {key: getattr(prediction, key) for key in ("label", "index", "probability", "probabilities")}

    @app.post("/predict", response_model=PredictionOut, responses=ERRORS, openapi_extra=SINGLE_BODY)
    async def predict(request: Request) -> dict:
        """Classify one image, sent as the multipart field `file` or as the raw request body."""
        started = time.perf_counter()
        deadline = asyncio.get_running_loop().time() + options.timeout_s
        async with _before(deadline, 408, _slow_upload(options)):
            uploads = await _read_uploads(request, options, batch=False)
        async with _before(deadline, 504, _slow_answer(options)):
            [image] = await decode_all(uploads)
            if isinstance(image, ImageError):
                raise _unreadable(image)
            [row] = await infer([image])
        return {**describe(row), "model": model_name, "latency_ms": _milliseconds_since(started)}

    @app.post("/predict/batch", response_model=BatchOut, responses=ERRORS, openapi_extra=BATCH_BODY)
    async def predict_batch(request: Request) -> dict:
        """Classify up to `max_batch_files` images sent as repeated multipart fields `files`.

        An image that cannot be read or is over the size limit gets an `error` in its place; the others are still
        answered. Only a request over the limit of a whole batch (`max_batch_files` × the limit) is refused (413).
        """
        started = time.perf_counter()
        deadline = asyncio.get_running_loop().time() + options.timeout_s
        async with _before(deadline, 408, _slow_upload(options)):
            uploads = await _read_uploads(request, options, batch=True)
        async with _before(deadline, 504, _slow_answer(options)):
            images = await decode_all(uploads)
            readable = [image for image in images if isinstance(image, torch.Tensor)]
            rows = iter(await infer(readable) if readable else [])
        predictions = []
        for (name, _), image in zip(uploads, images):
            answer = {"error": str(image)} if isinstance(image, ImageError) else describe(next(rows))
            predictions.append({"file": name, **answer})
        return {"predictions": predictions, "model": model_name, "latency_ms": _milliseconds_since(started)}

    def explain(data: bytes, name: str) -> bytes | ImgclfError:
        try:
            overlay = explain_image(run, open_image_bytes(data, name=name), max_side=EXPLAIN_SIDE).overlay
        except ImgclfError as error:
            return error
        buffer = io.BytesIO()
        overlay.save(buffer, format="PNG")
        return buffer.getvalue()

    @app.post("/explain", response_class=Response, responses={**ERRORS, **EXPLAINED}, openapi_extra=SINGLE_BODY)
    async def explain_upload(request: Request) -> Response:
        """Grad-CAM of the predicted class for one image: a PNG of the photo with the heat map over it."""
        deadline = asyncio.get_running_loop().time() + options.timeout_s
        async with _before(deadline, 408, _slow_upload(options)):
            [(name, data)] = await _read_uploads(request, options, batch=False)
        async with _before(deadline, 504, _slow_answer(options)):
            answer = await asyncio.get_running_loop().run_in_executor(explainer, explain, data, name)
        if isinstance(answer, ImageError):
            raise _unreadable(answer)
        if isinstance(answer, ImgclfError):
            raise HTTPException(501, f"Grad-CAM cannot explain this model: {answer}")
        return Response(answer, media_type="image/png")

    @app.get("/health", response_model=Health, responses={503: ERRORS[503]})
    async def health() -> dict:
        """Whether the service can answer, and its counters."""
        if not batcher.alive:
            raise HTTPException(503, STOPPED)
        return {
            "status": "ok",
            "model": model_name,
            "waiting": batcher.waiting,
            "batches": batcher.batches,
            "images": batcher.images,
        }

    @app.get("/model", response_model=ModelInfo)
    async def model_info() -> dict:
        """The model's classes (index order), its preprocessing, and the service's limits."""
        return {
            "model": model_name,
            "run": run.run_dir.name,
            "engine": run.engine.name,
            "classes": run.class_names,
            "preprocessing": dataclasses.asdict(preprocessing),
            "limits": {
                "max_upload_bytes": options.max_upload_bytes,
                "max_batch_files": options.max_batch_files,
                "timeout_s": options.timeout_s,
            },
        }

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY})

    return app


def serve(
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    engine: str = "auto",
    options: ServeOptions | None = None,
) -> None:
    """Load the run in `run_dir` once and serve it on http://host:port until interrupted (Ctrl-C).

    engine: the runtime `imgclf.load` runs the model with ("auto" picks the fastest installed one).
    The address is taken before the model loads, so a port out of range or in use fails at once (`ConfigError`).
    """
    sockets = listen(host, port)
    try:
        if host not in LOCAL_HOSTS:
            logger.warning(
                "Serving on %s: anyone who can reach this machine can use the model (no authentication).", host
            )
        app = create_app(load(run_dir, engine=engine), options)
        for sock in sockets:
            logger.info("Listening on %s (Ctrl-C stops)", _url(sock))
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, backlog=BACKLOG, log_level="info"))
        # uvicorn shuts down on Ctrl-C, then raises it again; for a server that is the normal way to end.
        with suppress(KeyboardInterrupt):
            server.run(sockets=sockets)
    finally:
        for sock in sockets:
            sock.close()


def listen(host: str, port: int) -> list[socket.socket]:
    """Sockets bound and listening on `port` of every address `host` names, set up as uvicorn's own would be.

    Raises `ConfigError` naming --host or --port when the port is out of range, already in use, or not ours to
    take. Listening at once holds the port: a second server started meanwhile fails here, not after loading its
    model, and clients connecting before the app is ready wait instead of being refused.
    """
    if not 0 <= port <= MAX_PORT:
        raise ConfigError(
            f"--port must be from 0 to {MAX_PORT} (0: any free port). Received: --port={port}. The default is 8000."
        )
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ConfigError(
            f"--host {host} is not an address or a host name this machine knows ({error.strerror}). "
            f"Received: --host={host}. Use 127.0.0.1 for this machine only, 0.0.0.0 for every network."
        ) from None
    sockets = []
    try:
        for family, kind, protocol, _, address in dict.fromkeys(addresses):
            sock = socket.socket(family, kind, protocol)
            sockets.append(sock)
            # asyncio's create_server, which uvicorn uses, sets these: the port can be taken again while
            # connections of a stopped server linger, and an IPv6 socket leaves IPv4 to its own socket.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
    except OSError as error:
        for sock in sockets:
            sock.close()
        if error.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"Port {port} on {host} is already in use. Received: --port={port}. "
                "Choose another port with --port, or stop the other server."
            ) from None
        raise ConfigError(
            f"Cannot listen on port {port} of {host}: {error.strerror or error}. "
            f"Received: --host={host}, --port={port}."
        ) from None
    return sockets


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


@asynccontextmanager
async def _before(deadline: float, status: int, message: str) -> AsyncIterator[None]:
    """Run the block until the event loop's clock reaches `deadline`, then answer `status` with `message`."""
    try:
        async with asyncio.timeout_at(deadline):
            yield
    except TimeoutError:
        raise HTTPException(status, message) from None


def _slow_upload(options: ServeOptions) -> str:
    return f"The upload did not arrive within the server's timeout of {options.timeout_s:g} s. Send it again."


def _slow_answer(options: ServeOptions) -> str:
    return (
        f"No answer within the server's timeout of {options.timeout_s:g} s: it is overloaded. "
        "Retry later, or start it with a longer --timeout."
    )


def _upload_limit(options: ServeOptions) -> str:
    limit = options.max_upload_bytes
    return f"the limit of {limit / MB:g} MB per image ({limit} bytes)"


def _too_large(options: ServeOptions, batch: bool) -> HTTPException:
    if not batch:
        return HTTPException(413, f"The upload is larger than {_upload_limit(options)}. {SHRINK}.")
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


async def _read_uploads(request: Request, options: ServeOptions, batch: bool) -> list[tuple[str, bytes]]:
    """The (name, bytes) of each image in the request; the client's file name is only ever a label."""
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


def _unreadable(error: ImageError) -> HTTPException:
    return HTTPException(415 if isinstance(error, UnsupportedImageError) else 400, f"{error}.")


def _milliseconds_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
