"""What the service answers and accepts, as the OpenAPI document at /docs describes it."""

from __future__ import annotations

from pydantic import BaseModel, model_serializer


class _LabelsIfMultiLabel(BaseModel):
    """Leaves `labels` out of the answer unless it has them: a single-label run answers as it always has."""

    @model_serializer(mode="wrap")
    def _labels_if_given(self, handler):
        values = handler(self)
        if values.get("labels") is None:
            values.pop("labels", None)
        return values


class PredictionOut(_LabelsIfMultiLabel):
    """One image's answer; below the run's `--min-confidence` the label is `unsure` and the index null."""

    label: str
    index: int | None
    probability: float
    probabilities: dict[str, float]
    labels: list[str] | None = None
    """A multi-label run's labels at or above their thresholds, most probable first (`label` joins them by ;)."""
    model: str
    latency_ms: float


class BatchItem(_LabelsIfMultiLabel):
    """One image of a batch: its prediction, or `error` when it could not be read or is over the size limit."""

    file: str
    label: str | None = None
    index: int | None = None
    probability: float | None = None
    probabilities: dict[str, float] | None = None
    labels: list[str] | None = None
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
    """How an image becomes the model's input; `resize` (squash, crop or pad, with `pad_color`) says how an
    upload is brought to the square `image_size`."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    resize: str
    pad_color: tuple[int, int, int]


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
        413: "Upload over the size limit, or an image over the pixel limit",
        415: "Not an image format the service reads",
        500: "The model failed (see the server log)",
        501: "Grad-CAM cannot explain this model (it has no spatial feature map)",
        503: "Too many images waiting (retry), or the inference thread stopped",
        504: "No answer within the timeout",
    }.items()
}

EXPLAINED = {200: {"content": {"image/png": {}}, "description": "The photo with the Grad-CAM heat map over it"}}


def _body(fields: dict) -> dict:
    return {"requestBody": {"required": True, "content": fields}}


BINARY = {"type": "string", "format": "binary"}
# The routes read their bodies themselves (raw or multipart), so the request bodies are described by hand.
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
