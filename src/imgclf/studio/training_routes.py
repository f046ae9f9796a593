"""The studio's endpoints for recipes and jobs: train, resume, audit, list, cancel, and each job's live events.

    curl -X POST 127.0.0.1:PORT/api/projects/cars-planes/train -d '{"recipe": "quick"}' \\
         -H 'Content-Type: application/json'                        # 202 and the job, queued
    curl -N 127.0.0.1:PORT/api/jobs/JOB/events                      # server-sent events until the job ends

The routes read the app's `workspace` and `jobs` (`JobQueue`) from `request.app.state`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from imgclf.studio.jobs import JobQueue
from imgclf.studio.recipes import RECIPES
from imgclf.studio.workspace import StudioError

KEEP_ALIVE_S = 15.0
"""The longest silence on an event stream: a comment line then keeps proxies and browsers from closing it."""

router = APIRouter(prefix="/api", tags=["jobs"])


class TrainRequest(BaseModel):
    recipe: str = Field("quick", description="quick, better, cnn or advanced (GET /api/recipes)")
    options: dict = Field(default_factory=dict, description="imgclf train's options by TrainConfig name")


class ResumeRequest(BaseModel):
    epochs: int | None = Field(None, description="epochs in all, more than the run has trained")


def _jobs(request: Request) -> JobQueue:
    return request.app.state.jobs


@router.get("/recipes")
async def recipes() -> list[dict]:
    """The ways to train, each with its title, description and `imgclf.train` options."""
    return [recipe.to_dict() for recipe in RECIPES.values()]


@router.post("/projects/{project}/train", status_code=202)
def train(project: str, body: TrainRequest, request: Request) -> dict:
    """Queue a training of the project with a recipe; a bad option is refused before any work starts."""
    chosen = request.app.state.workspace.project(project)
    return _jobs(request).submit(chosen, "train", {"recipe": body.recipe, "options": body.options}).to_dict()


@router.post("/projects/{project}/runs/{run}/resume", status_code=202)
def resume(project: str, run: str, request: Request, body: ResumeRequest | None = None) -> dict:
    """Queue the resumption of a run from its last saved epoch (with more `epochs` in all, if given)."""
    chosen = request.app.state.workspace.project(project)
    epochs = None if body is None else body.epochs
    return _jobs(request).submit(chosen, "resume", {"run": run, "epochs": epochs}).to_dict()


@router.post("/projects/{project}/audit", status_code=202)
def audit(project: str, request: Request) -> dict:
    """Queue an audit of the project's photos, written into its `audit/` folder."""
    chosen = request.app.state.workspace.project(project)
    return _jobs(request).submit(chosen, "audit", {}).to_dict()


@router.get("/jobs")
async def jobs(request: Request) -> dict:
    """Every job since the studio started, oldest first."""
    return {"jobs": [job.to_dict() for job in _jobs(request).jobs()]}


@router.get("/jobs/{job_id}")
async def job(job_id: str, request: Request) -> dict:
    return _jobs(request).get(job_id).to_dict()


@router.post("/jobs/{job_id}/cancel")
async def cancel(job_id: str, request: Request) -> dict:
    """Drop a queued job, or stop a running one as Ctrl-C does (a training keeps its last complete epoch)."""
    return _jobs(request).cancel(job_id).to_dict()


@router.get("/jobs/{job_id}/events", response_class=StreamingResponse)
async def events(
    job_id: str, request: Request, last_event_id: Annotated[str | None, Header()] = None
) -> StreamingResponse:
    """The job's events as server-sent events (`text/event-stream`), each with its number as `id:`; a browser
    that reconnects sends `Last-Event-ID` and gets only the later ones. The stream ends after the last event."""
    queue = _jobs(request)
    queue.get(job_id)
    stream = _server_sent(queue.events(job_id, after=_event_number(last_event_id)))
    return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _event_number(last_event_id: str | None) -> int:
    if last_event_id is None:
        return 0
    if not last_event_id.isdecimal():
        raise StudioError(f"Last-Event-ID must be an event's number. Received: Last-Event-ID={last_event_id!r}.")
    return int(last_event_id)


async def _server_sent(events: AsyncIterator[dict]) -> AsyncIterator[str]:
    """`events` as server-sent events, with a comment line after `KEEP_ALIVE_S` of silence."""
    waiting = None
    try:
        while True:
            waiting = waiting or asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({waiting}, timeout=KEEP_ALIVE_S)
            if not done:
                yield ": keep-alive\n\n"
                continue
            finished, waiting = done.pop(), None
            if isinstance(finished.exception(), StopAsyncIteration):  # the job has ended
                return
            event = finished.result()
            yield f"id: {event['seq']}\ndata: {json.dumps(event)}\n\n"
    finally:
        if waiting is not None:
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await waiting
        await events.aclose()
