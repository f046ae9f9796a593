"""The state behind the routes: the loaded run, its inference thread and the decoding and Grad-CAM threads."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import torch
from PIL import Image
from starlette.exceptions import HTTPException

from imgclf.config import ImgclfError
from imgclf.data.images import ImageError
from imgclf.deploy.predictor import Run
from imgclf.evaluation.explain import explain_image
from imgclf.serve.batching import MicroBatcher, NotFinite, QueueFull
from imgclf.serve.options import ServeOptions
from imgclf.serve.uploads import Upload, decode_upload, open_upload

STOPPED = "The inference thread has stopped (see the server log); restart the server."
EXPLAIN_SIDE = 512


class Service:
    """One run served: decode uploads on a pool of threads, answer them in micro-batches, explain one at a time.

    Its threads run inside `async with service.running():` (the app's lifespan).
    """

    def __init__(self, run: Run, options: ServeOptions):
        self.run = run
        self.options = options
        self.model_name = run.config.train.model
        self.batcher = MicroBatcher(run.predict_tensors, options.max_batch_size, options.max_queue)
        self._decoders = ThreadPoolExecutor(options.decode_threads, thread_name_prefix="imgclf-decode")
        # Grad-CAM runs the PyTorch model with gradients: one image at a time, beside the prediction path.
        self._explainer = ThreadPoolExecutor(1, thread_name_prefix="imgclf-explain")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Start the inference thread and warm the model up with one full batch; stop every thread on the way out."""
        self.batcher.start()
        try:
            size = self.run.preprocessing.image_size
            blank = torch.zeros(3, size, size, dtype=torch.uint8)
            futures = self.batcher.submit([blank] * self.options.max_batch_size)
            await asyncio.gather(*map(asyncio.wrap_future, futures))
            yield
        finally:
            self.batcher.stop()
            self._decoders.shutdown()
            self._explainer.shutdown()

    async def decode_all(self, uploads: Sequence[Upload]) -> list[torch.Tensor | ImageError]:
        """Each upload as the model's input, or the `ImageError` saying why it cannot be read, in order."""
        loop = asyncio.get_running_loop()
        preprocessing = self.run.preprocessing
        return await asyncio.gather(
            *(
                loop.run_in_executor(self._decoders, decode_upload, data, name, preprocessing, self.options)
                for name, data in uploads
            )
        )

    async def infer(self, images: Sequence[torch.Tensor]) -> list[list[float]]:
        """The class probabilities of each image; `HTTPException` 503 when busy or stopped, 500 when the model fails."""
        if not self.batcher.alive:
            raise HTTPException(503, STOPPED)
        try:
            futures = self.batcher.submit(images)
        except QueueFull as error:
            raise HTTPException(
                503, f"The server is busy: {error}. Retry in a moment.", headers={"Retry-After": "1"}
            ) from None
        try:
            return await asyncio.gather(*map(asyncio.wrap_future, futures))
        except NotFinite as error:
            raise HTTPException(500, f"The model gave this image {error}; see the server log.") from None
        except Exception as error:  # the model's own failure, already logged by the inference thread
            raise HTTPException(500, f"The model failed on this image ({error!r}); see the server log.") from None

    def describe(self, row: list[float]) -> dict:
        """One image's `label`, `index`, `probability` and `probabilities` from its class probabilities, and a
        multi-label run's `labels`."""
        prediction = self.run.prediction_from(torch.tensor(row))
        keys = ("label", "index", "probability", "probabilities", "labels")
        return {key: getattr(prediction, key) for key in keys if key != "labels" or prediction.labels is not None}

    async def explain(self, upload: Upload, label: str | None = None) -> bytes | ImgclfError:
        """The PNG of the photo with the Grad-CAM overlay of `label` (default: the most probable class), or the
        error saying why there is none."""
        return await asyncio.get_running_loop().run_in_executor(self._explainer, self._explain, *upload, label)

    def _explain(self, name: str, data: bytes, label: str | None) -> bytes | ImgclfError:
        try:
            return explanation_png(self.run, open_upload(data, name, self.options), label)
        except ImgclfError as error:
            return error


def explanation_png(run: Run, image: str | Path | Image.Image, label: str | None) -> bytes:
    """The PNG of `image` under the Grad-CAM overlay of `label` (None: the most probable class), its longer side
    at most `EXPLAIN_SIDE`, as `/explain` answers it."""
    buffer = io.BytesIO()
    explain_image(run, image, label, max_side=EXPLAIN_SIDE).overlay.save(buffer, format="PNG")
    return buffer.getvalue()
