"""The studio's endpoints for finished runs: the runs table, a run's page, testing it on photos, Grad-CAM, export.

    GET  /api/projects/P/runs                      the runs table
    GET  /api/projects/P/runs/R                    config, metrics, history, confusion, calibration, coverage
    GET  /api/projects/P/runs/R/images?true=A&predicted=B    one confusion cell; ?wrong=1&limit=20 most wrong
    POST /api/projects/P/runs/R/predict            multipart `file` → label, confidence, probabilities, unsure
                                                   (multi-label: also labels and thresholds)
    POST /api/projects/P/runs/R/explain?label=L    multipart `file`, or JSON {"image": id} → Grad-CAM PNG
    POST /api/projects/P/runs/R/export             ONNX with its parity check, into RUN/export/
    GET  /api/projects/P/runs/R/export/FILE        model.onnx or export.json
    GET  /api/projects/P/runs/R/snippet            the `imgclf serve` command and a Python snippet

Uploads are read, limited and decoded by `serve.uploads`, as `imgclf serve` does. Models run on the
`RunCache`'s model thread, one call at a time, never on the event loop.
"""

from __future__ import annotations

import functools
import shlex
import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response
from starlette.exceptions import HTTPException

from imgclf.config import ImgclfError
from imgclf.data.images import ImageError
from imgclf.deploy.export import ONNX_FILE, REPORT_FILE, ExportError
from imgclf.deploy.predictor import Run
from imgclf.evaluation.explain import class_index
from imgclf.serve.options import ServeOptions
from imgclf.serve.service import explanation_png
from imgclf.serve.uploads import Upload, decode_upload, open_upload, read_uploads, unreadable
from imgclf.studio import inspection
from imgclf.studio.run_cache import RunCache
from imgclf.studio.workspace import NotFound, Project, StudioError

EXPORT_DIR = "export"
EXPORT_FILES = {ONNX_FILE: "application/octet-stream", REPORT_FILE: "application/json"}
MOST_WRONG = 20

router = APIRouter(prefix="/api/projects/{project}/runs", tags=["runs"])


def _project(request: Request, name: str) -> Project:
    return request.app.state.workspace.project(name)


def _runs(request: Request) -> RunCache:
    return request.app.state.runs


def upload_limits(request: Request) -> ServeOptions:
    """The upload size and pixel limits of the studio's options (`create_app`)."""
    return request.app.state.options.uploads


@router.get("")
def runs_table(request: Request, project: str) -> dict:
    """The project's runs, oldest first: model, data, date, epochs, accuracy, training time and state."""
    return {"runs": inspection.list_project_runs(_project(request, project))}


@router.get("/{run}")
def run_page(request: Request, project: str, run: str) -> dict:
    """Everything a run's page shows (see `inspection.run_detail`)."""
    return inspection.run_detail(_project(request, project), run)


@router.get("/{run}/images")
def run_images(
    request: Request,
    project: str,
    run: str,
    true: Annotated[str | None, Query()] = None,
    predicted: Annotated[str | None, Query()] = None,
    wrong: bool = False,
    limit: Annotated[int, Query(ge=1, le=10_000)] = MOST_WRONG,
) -> dict:
    """The validation images of one confusion cell (`true` and `predicted`), or the `limit` most confidently
    wrong (`wrong=1`)."""
    where = _project(request, project)
    if wrong:
        return {"images": inspection.most_wrong(where, run, limit)}
    if true is None or predicted is None:
        raise StudioError(
            f"Name a confusion cell with both `true` and `predicted`, or ask for `wrong=1`. "
            f"Received: true={true!r}, predicted={predicted!r}."
        )
    return {"images": inspection.cell_images(where, run, true, predicted)}


@router.post("/{run}/predict")
async def predict(request: Request, project: str, run: str) -> dict:
    """Classify one photo, sent as the multipart field `file` (or the raw body), as `imgclf serve` does."""
    started = time.perf_counter()
    where, limits = _project(request, project), upload_limits(request)
    [upload] = await read_uploads(request, limits, batch=False)
    answer = await _runs(request).call(where, run, functools.partial(_predict, upload=upload, limits=limits))
    return {**answer, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


def _predict(run: Run, upload: Upload, limits: ServeOptions) -> dict:
    image = decode_upload(upload[1], upload[0], run.preprocessing, limits)
    if isinstance(image, ImageError):
        raise unreadable(image)
    prediction = run.prediction_from(run.predict_tensors(image[None])[0])
    answer = {
        "label": prediction.label,
        "index": prediction.index,
        "confidence": prediction.probability,
        "probabilities": prediction.probabilities,
        "unsure": prediction.index is None and prediction.labels is None,
        "model": run.config.train.model,
    }
    if run.thresholds is None:
        return answer
    return answer | {"labels": prediction.labels, "thresholds": dict(zip(run.class_names, run.thresholds))}


@router.post("/{run}/explain", response_class=Response, responses={200: {"content": {"image/png": {}}}})
async def explain(request: Request, project: str, run: str, label: Annotated[str | None, Query()] = None) -> Response:
    """Grad-CAM of the predicted class, or of `label`: a PNG of the photo with the heat map over it. The photo is
    an upload (multipart `file`) or an image of the project's data, named by id in a JSON body
    `{"image": "CLASS/NAME"}`. A multi-label run explains its most probable label unless `label` names one."""
    where, limits = _project(request, project), upload_limits(request)
    if request.headers.get("content-type", "").lower().startswith("application/json"):
        photo: Path | Upload = inspection.data_image(where, await _image_id(request))
    else:
        [photo] = await read_uploads(request, limits, batch=False)
    png = await _runs(request).call(where, run, functools.partial(_explain, photo=photo, label=label, limits=limits))
    return Response(png, media_type="image/png")


async def _image_id(request: Request) -> object:
    """The `image` of a JSON body `{"image": "CLASS/NAME.jpg"}`."""
    try:
        body = await request.json()
    except ValueError:
        raise StudioError('The body is not JSON. Send {"image": "CLASS/NAME.jpg"}, or the photo as `file`.') from None
    return body.get("image") if isinstance(body, dict) else None


def _explain(run: Run, photo: Path | Upload, label: str | None, limits: ServeOptions) -> bytes:
    try:
        class_index(run, label, option="label")
    except ImgclfError as error:
        raise StudioError(str(error)) from None
    try:
        image = photo if isinstance(photo, Path) else open_upload(photo[1], photo[0], limits)
        return explanation_png(run, image, label)
    except ImageError as error:
        raise unreadable(error) from None
    except ImgclfError as error:
        raise HTTPException(501, f"Grad-CAM cannot explain this model: {error}") from None


@router.post("/{run}/export")
async def export(request: Request, project: str, run: str) -> dict:
    """Export the run to ONNX in RUN/export/, after checking that it answers as the PyTorch model does."""
    where = _project(request, project)
    out_dir = inspection.run_folder(where, run) / EXPORT_DIR
    parity = await _runs(request).call(where, run, functools.partial(_export, out_dir=out_dir))
    return {"files": list(EXPORT_FILES), "parity": parity}


def _export(run: Run, out_dir: Path) -> str:
    try:
        return run.export(out_dir).parity.describe()
    except ExportError as error:
        raise StudioError(str(error)) from None


@router.get("/{run}/export/{file}", response_class=FileResponse)
def download_export(request: Request, project: str, run: str, file: str) -> FileResponse:
    """`model.onnx` or `export.json` of the run's export."""
    where = _project(request, project)
    folder = inspection.run_folder(where, run) / EXPORT_DIR
    if file not in EXPORT_FILES:
        raise NotFound(f"An export holds {list(EXPORT_FILES)}. Received: file={file!r}.")
    if not (folder / file).is_file():
        raise NotFound(f"The run {run!r} has no {file} yet. Export it first.")
    return FileResponse(folder / file, media_type=EXPORT_FILES[file], filename=f"{run}-{file}")


@router.get("/{run}/snippet")
def snippet(request: Request, project: str, run: str) -> dict:
    """How to use the run outside the studio: the `imgclf serve` command and a few lines of Python."""
    folder = inspection.run_folder(_project(request, project), run)
    answer = (
        "labels, prediction.probabilities" if inspection.is_multi_label(folder) else "label, prediction.probability"
    )
    python = (
        "import imgclf\n\n"
        f"run = imgclf.load({str(folder)!r})\n"
        'prediction = run.predict("photo.jpg")\n'
        f"print(prediction.{answer})\n"
    )
    return {"serve": f"imgclf serve {shlex.quote(str(folder))}", "python": python}
