"""The studio's data endpoints, under /api: projects, classes, photos and their thumbnails, moves and undo.

Each endpoint that reads or writes files is a plain function, which FastAPI runs on a worker thread; the
`Workspace` and `StudioOptions` come from the app's state (`create_app`).
"""

from __future__ import annotations

import mimetypes
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from imgclf.serve.schemas import BATCH_BODY
from imgclf.serve.uploads import read_uploads
from imgclf.studio import findings, moves, projects
from imgclf.studio.options import StudioOptions
from imgclf.studio.thumbnails import kept_thumbnail, thumbnail, thumbnail_folder
from imgclf.studio.workspace import Project, Workspace

router = APIRouter(prefix="/api")


class ClassCount(BaseModel):
    name: str
    count: int


class ProjectSummary(BaseModel):
    name: str
    classes: list[ClassCount]
    images: int
    runs: int
    audited: bool


class ProjectList(BaseModel):
    projects: list[ProjectSummary]


class NewName(BaseModel):
    name: str


class ImportRequest(BaseModel):
    name: str
    folder: str


class Skipped(BaseModel):
    file: str
    reason: str


class Added(BaseModel):
    added: list[str]
    skipped: list[Skipped]


class Finding(BaseModel):
    kind: str
    detail: str
    suggested: str | None


class ImageEntry(BaseModel):
    id: str
    class_name: str = Field(alias="class")
    name: str
    findings: list[Finding]


class ImagePage(BaseModel):
    total: int
    images: list[ImageEntry]


class Moved(BaseModel):
    from_id: str = Field(alias="from")
    to: str


class MoveResult(BaseModel):
    journal: str
    moved: list[Moved]


class AuditFindings(BaseModel):
    summary: dict | None
    findings: dict[str, int]


class MoveRequest(BaseModel):
    images: list[str]
    to: str


class UndoRequest(BaseModel):
    journal: str | None = None


class Restored(BaseModel):
    restored: list[str]


# async: FastAPI runs a plain function dependency on a worker thread, one more hop for every request.
async def get_workspace(request: Request) -> Workspace:
    """The `Workspace` that `create_app` put on the app's state."""
    return request.app.state.workspace


async def get_options(request: Request) -> StudioOptions:
    """The `StudioOptions` that `create_app` put on the app's state."""
    return request.app.state.options


WorkspaceDep = Annotated[Workspace, Depends(get_workspace)]
OptionsDep = Annotated[StudioOptions, Depends(get_options)]


@router.get("/projects", response_model=ProjectList)
def list_projects(workspace: WorkspaceDep) -> dict:
    """Every project of the workspace, with its classes and counts."""
    return {"projects": [projects.summary(project) for project in workspace.projects()]}


@router.post("/projects", response_model=ProjectSummary, status_code=201)
def create_project(body: NewName, workspace: WorkspaceDep) -> dict:
    """A new, empty project."""
    return projects.summary(workspace.create_project(body.name))


@router.post("/projects/import", response_model=ProjectSummary, status_code=201)
def import_project(body: ImportRequest, workspace: WorkspaceDep) -> dict:
    """A new project holding the photos of an existing data folder (`folder/CLASS/...`), which is only read."""
    return projects.summary(projects.import_folder(workspace, body.name, body.folder))


@router.get("/projects/{project}", response_model=ProjectSummary)
def get_project(project: str, workspace: WorkspaceDep) -> dict:
    """One project's classes and counts."""
    return projects.summary(workspace.project(project))


@router.post("/projects/{project}/classes", response_model=ProjectSummary, status_code=201)
def create_class(project: str, body: NewName, workspace: WorkspaceDep) -> dict:
    """Add an empty class to the project."""
    found = workspace.project(project)
    projects.create_class(found, body.name)
    return projects.summary(found)


@router.post("/projects/{project}/classes/{class_name}/images", response_model=Added, openapi_extra=BATCH_BODY)
async def add_images(
    project: str, class_name: str, request: Request, workspace: WorkspaceDep, options: OptionsDep
) -> dict:
    """Add photos to a class: multipart fields `files`, at most `max_files` of at most `max_upload_bytes` each.

    Each is decoded as `imgclf serve` decodes uploads and saved under a safe, free name; those that are not
    images, or are over a limit, are skipped with the reason.
    """
    found = await run_in_threadpool(workspace.project, project)
    await run_in_threadpool(projects.class_folder, found, class_name)
    uploads = await read_uploads(request, options.uploads, batch=True)
    return await run_in_threadpool(projects.add_photos, found, class_name, uploads, options.uploads)


@router.get("/projects/{project}/images", response_model=ImagePage)
def list_images(
    project: str,
    workspace: WorkspaceDep,
    class_name: Annotated[str | None, Query(alias="class")] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    finding: str | None = None,
) -> dict:
    """One page of photos (`{"total", "images": [{"id", "class", "name", "findings"}]}`), optionally of one class
    or with one kind of audit finding."""
    return projects.list_images(workspace.project(project), class_name, offset, limit, finding)


@router.get("/projects/{project}/thumbnails/{image:path}", response_class=Response)
async def get_thumbnail(project: str, image: str, request: Request, workspace: WorkspaceDep, options: OptionsDep):
    """A square JPEG thumbnail of a photo, made on first request and kept; revalidated with its ETag."""
    # A kept thumbnail is a few small reads, answered on the event loop: the hop to a worker thread and back
    # cost more than the reads on a busy 2-core machine. Only making one goes to a thread.
    path = projects.image_path(workspace.project(project), image)
    folder = thumbnail_folder(workspace.root)
    data, key = kept_thumbnail(path, folder)
    if data is None:
        data, key = await run_in_threadpool(thumbnail, path, folder, options.max_pixels, image)
    headers = {"ETag": f'"{key}"', "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == headers["ETag"]:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type="image/jpeg", headers=headers)


@router.get("/projects/{project}/files/{image:path}", response_class=FileResponse)
def get_file(project: str, image: str, workspace: WorkspaceDep) -> FileResponse:
    """The photo itself, as stored."""
    path = projects.image_path(workspace.project(project), image)
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "no-cache"})


@router.post("/projects/{project}/moves", response_model=MoveResult)
def move_images(project: str, body: MoveRequest, workspace: WorkspaceDep) -> dict:
    """Move photos to another class, or to the project's quarantine with `"to": "quarantine"`; undoable."""
    return moves.move_images(workspace.project(project), body.images, body.to)


@router.post("/projects/{project}/undo", response_model=Restored)
def undo(project: str, workspace: WorkspaceDep, body: UndoRequest | None = None) -> dict:
    """Put back the photos of the last change, or of the change whose journal is named."""
    return moves.undo_change(workspace.project(project), body.journal if body else None)


@router.get("/projects/{project}/audit", response_model=AuditFindings)
def get_audit(project: str, workspace: WorkspaceDep) -> dict:
    """The last audit's summary (null before the first) and how many photos have each kind of finding."""
    found: Project = workspace.project(project)
    return {
        "summary": findings.audit_summary(found.audit_dir / "audit.json"),
        "findings": projects.count_findings(found),
    }
