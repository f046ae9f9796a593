"""The studio's web app: `create_app(workspace, options)` builds it; `imgclf.studio.server.studio` runs it.

The page (`static/`) talks to the JSON API under /api, documented at /openapi.json and /docs. Every request
passes `SameOriginOnly` first (`security.py`); every error is JSON, `{"error": "what is wrong and what to do"}`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from imgclf.config import ImgclfError
from imgclf.data.images import TooManyPixelsError, UnsupportedImageError
from imgclf.data.journal import FixError
from imgclf.serve.routes import error_as_json
from imgclf.studio.data_routes import router as data_router
from imgclf.studio.jobs import JobQueue
from imgclf.studio.options import StudioOptions
from imgclf.studio.run_cache import RunCache
from imgclf.studio.runs_routes import router as runs_router
from imgclf.studio.security import SameOriginOnly
from imgclf.studio.training_routes import router as training_router
from imgclf.studio.workspace import NotFound, Workspace

# The HTTP status of each kind of library error (by its closest class); any other `ImgclfError` is 400.
ERROR_STATUS = {NotFound: 404, FixError: 409, TooManyPixelsError: 413, UnsupportedImageError: 415}


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    try:
        yield
    finally:
        app.state.jobs.close()  # no worker process outlives the server
        app.state.runs.close()


def create_app(workspace: Workspace | str | Path, options: StudioOptions | None = None) -> FastAPI:
    """The studio's FastAPI app over `workspace` (a folder of projects, made when missing).

    >>> app = create_app("imgclf-studio", StudioOptions(port=8765))
    """
    options = options or StudioOptions()
    app = FastAPI(title="imgclf studio", version=version("imgclf"), lifespan=_lifespan)
    app.state.workspace = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    app.state.jobs = JobQueue(app.state.workspace)
    app.state.options = options
    app.state.runs = RunCache()
    app.add_middleware(SameOriginOnly, host=options.host)
    app.add_exception_handler(HTTPException, error_as_json)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(ImgclfError, library_error)
    app.include_router(data_router)
    app.include_router(training_router)
    app.include_router(runs_router)
    app.mount("/", StaticFiles(packages=[("imgclf.studio", "static")], html=True), name="page")
    return app


async def library_error(request: Request, error: ImgclfError) -> JSONResponse:
    """A library error as `{"error": its message}`: 404 for what does not exist, 409 for a move that cannot be
    made, 413/415 for an image over the pixel limit or of another format, else 400."""
    status = next((ERROR_STATUS[kind] for kind in type(error).__mro__ if kind in ERROR_STATUS), 400)
    return JSONResponse({"error": str(error)}, status_code=status)


async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
    """A request whose parameters or JSON body do not fit the endpoint, as 400 `{"error": ...}` naming each."""
    problems = "; ".join(
        f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}" for problem in error.errors()
    )
    return JSONResponse(
        {"error": f"The request does not fit {request.method} {request.url.path}: {problems}. See /docs."},
        status_code=400,
    )
