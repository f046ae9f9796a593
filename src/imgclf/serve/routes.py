"""The service's endpoints, on an `APIRouter`; each gets the app's `Service` through `Depends(get_service)`."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated

import torch
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from imgclf.config import ImgclfError
from imgclf.data.images import ImageError
from imgclf.evaluation.explain import class_index
from imgclf.serve.options import slow_answer, slow_upload
from imgclf.serve.schemas import (
    BATCH_BODY,
    ERRORS,
    EXPLAINED,
    SINGLE_BODY,
    BatchOut,
    Health,
    ModelInfo,
    PredictionOut,
)
from imgclf.serve.service import STOPPED, Service
from imgclf.serve.uploads import read_uploads, unreadable

# The page loads nothing from elsewhere; the browser enforces it.
PAGE_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src blob:; connect-src 'self'"
)

router = APIRouter()


async def get_service(request: Request) -> Service:
    """The `Service` that `create_app` put on the app's state."""
    # async: FastAPI runs a plain function dependency on a worker thread, one more hop for every request.
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


@asynccontextmanager
async def _before(deadline: float, status: int, message: str) -> AsyncIterator[None]:
    """Run the block until the event loop's clock reaches `deadline`, then answer `status` with `message`."""
    try:
        async with asyncio.timeout_at(deadline):
            yield
    except TimeoutError:
        raise HTTPException(status, message) from None


def _deadline(service: Service) -> float:
    return asyncio.get_running_loop().time() + service.options.timeout_s


def _milliseconds_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


@router.post("/predict", response_model=PredictionOut, responses=ERRORS, openapi_extra=SINGLE_BODY)
async def predict(request: Request, service: ServiceDep) -> dict:
    """Classify one image, sent as the multipart field `file` or as the raw request body."""
    started, deadline = time.perf_counter(), _deadline(service)
    async with _before(deadline, 408, slow_upload(service.options)):
        uploads = await read_uploads(request, service.options, batch=False)
    async with _before(deadline, 504, slow_answer(service.options)):
        [image] = await service.decode_all(uploads)
        if isinstance(image, ImageError):
            raise unreadable(image)
        [row] = await service.infer([image])
    return {**service.describe(row), "model": service.model_name, "latency_ms": _milliseconds_since(started)}


@router.post("/predict/batch", response_model=BatchOut, responses=ERRORS, openapi_extra=BATCH_BODY)
async def predict_batch(request: Request, service: ServiceDep) -> dict:
    """Classify up to `max_batch_files` images sent as repeated multipart fields `files`.

    An image that cannot be read or is over the size limit gets an `error` in its place; the others are still
    answered. Only a request over the limit of a whole batch (`max_batch_files` × the limit) is refused (413).
    """
    started, deadline = time.perf_counter(), _deadline(service)
    async with _before(deadline, 408, slow_upload(service.options)):
        uploads = await read_uploads(request, service.options, batch=True)
    async with _before(deadline, 504, slow_answer(service.options)):
        images = await service.decode_all(uploads)
        readable = [image for image in images if isinstance(image, torch.Tensor)]
        rows = iter(await service.infer(readable) if readable else [])
    predictions = []
    for (name, _), image in zip(uploads, images):
        answer = {"error": str(image)} if isinstance(image, ImageError) else service.describe(next(rows))
        predictions.append({"file": name, **answer})
    return {"predictions": predictions, "model": service.model_name, "latency_ms": _milliseconds_since(started)}


@router.post("/explain", response_class=Response, responses={**ERRORS, **EXPLAINED}, openapi_extra=SINGLE_BODY)
async def explain_upload(
    request: Request, service: ServiceDep, label: Annotated[str | None, Query()] = None
) -> Response:
    """Grad-CAM of the predicted class for one image, or of the class `label`: a PNG of the photo with the heat map
    over it."""
    try:
        class_index(service.run, label, option="label")
    except ImgclfError as error:
        raise HTTPException(422, str(error)) from None
    deadline = _deadline(service)
    async with _before(deadline, 408, slow_upload(service.options)):
        [upload] = await read_uploads(request, service.options, batch=False)
    async with _before(deadline, 504, slow_answer(service.options)):
        answer = await service.explain(upload, label)
    if isinstance(answer, ImageError):
        raise unreadable(answer)
    if isinstance(answer, ImgclfError):
        raise HTTPException(501, f"Grad-CAM cannot explain this model: {answer}")
    return Response(answer, media_type="image/png")


@router.get("/health", response_model=Health, responses={503: ERRORS[503]})
async def health(service: ServiceDep) -> dict:
    """Whether the service can answer, and its counters."""
    batcher = service.batcher
    if not batcher.alive:
        raise HTTPException(503, STOPPED)
    return {
        "status": "ok",
        "model": service.model_name,
        "waiting": batcher.waiting,
        "batches": batcher.batches,
        "images": batcher.images,
    }


@router.get("/model", response_model=ModelInfo)
async def model_info(service: ServiceDep) -> dict:
    """The model's classes (index order), its preprocessing, and the service's limits."""
    run, options = service.run, service.options
    return {
        "model": service.model_name,
        "run": run.run_dir.name,
        "engine": run.engine.name,
        "classes": run.class_names,
        "preprocessing": dataclasses.asdict(run.preprocessing),
        "limits": {
            "max_upload_bytes": options.max_upload_bytes,
            "max_batch_files": options.max_batch_files,
            "timeout_s": options.timeout_s,
        },
    }


@functools.cache
def _page() -> str:
    return resources.files("imgclf.serve").joinpath("static/index.html").read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index() -> HTMLResponse:
    return HTMLResponse(_page(), headers={"Content-Security-Policy": PAGE_POLICY})


async def error_as_json(request: Request, error: HTTPException) -> JSONResponse:
    """Every HTTP error as `{"error": ...}`; a 404 or 405 says where the endpoints are listed."""
    message = error.detail
    if error.status_code == 404:
        message = f"Nothing at {request.url.path}. The endpoints are listed at /docs."
    elif error.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}. The endpoints are listed at /docs."
    return JSONResponse({"error": message}, status_code=error.status_code, headers=error.headers)
