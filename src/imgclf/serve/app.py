"""The web service: `create_app(run)` builds the FastAPI app; `imgclf.serve.server.serve` runs it with uvicorn.

    imgclf serve runs/efficientnet_lite0-20261125-101500 --port 8000
    curl -F file=@plane.jpg http://127.0.0.1:8000/predict

Requests are read and their images decoded on a small pool of threads; the model itself runs on one inference
thread that answers whatever images are waiting in one call (`MicroBatcher`), so concurrent clients share the
cores instead of fighting over them. Every error is JSON, `{"error": "what is wrong and what to do"}`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

from fastapi import FastAPI
from starlette.exceptions import HTTPException

from imgclf.deploy.predictor import Run
from imgclf.serve.options import ServeOptions
from imgclf.serve.routes import error_as_json, router
from imgclf.serve.service import Service


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with app.state.service.running():
        yield


def create_app(run: Run, options: ServeOptions | None = None) -> FastAPI:
    """The FastAPI app serving `run`: `/predict`, `/predict/batch`, `/explain`, `/health`, `/model`, the page `/`,
    `/docs`.

    The inference thread starts and warms the model up with the app's lifespan (uvicorn, or
    `with TestClient(app)`), and stops with it.

    >>> app = create_app(imgclf.load("runs/seed-cnn-20261125-101500"), ServeOptions(timeout_s=5))
    """
    app = FastAPI(
        title="imgclf",
        summary=f"Image classifier {run.config.train.model} ({', '.join(run.class_names)})",
        version=version("imgclf"),
        lifespan=_lifespan,
    )
    app.state.service = Service(run, options or ServeOptions())
    app.add_exception_handler(HTTPException, error_as_json)
    app.include_router(router)
    return app
