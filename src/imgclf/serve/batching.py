"""One inference thread that answers queued images in micro-batches: one model call for all that are waiting.

Concurrent requests then share the model instead of competing for the same cores: while a batch runs, the next
requests queue up, and the following call takes them all at once (up to `max_batch_size`).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import torch

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """More images are waiting than the queue holds; the caller should answer "busy, retry"."""


class NotFinite(Exception):
    """The model gave an image probabilities that are not numbers (NaN) or infinite."""


class MicroBatcher:
    """Runs `predict` (uint8 batch (N, 3, S, S) → probabilities (N, classes)) on a thread of its own.

    `submit` queues images and returns one future per image, resolved with that image's probabilities as a list
    of floats, or failed with the model's exception (`NotFinite` for probabilities that are not finite numbers).
    A future cancelled before its batch starts is skipped, so a timed-out request costs no model time.

    >>> batcher = MicroBatcher(run.predict_tensors, max_batch_size=8, max_queue=64)
    >>> batcher.start()
    >>> batcher.submit([tensor])[0].result()
    [0.12, 0.88]
    """

    def __init__(self, predict: Callable[[torch.Tensor], torch.Tensor], max_batch_size: int, max_queue: int):
        self.predict = predict
        self.max_batch_size = max_batch_size
        self._queue: queue.Queue[tuple[torch.Tensor, Future] | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._work, name="imgclf-inference", daemon=True)
        self.batches = 0
        self.images = 0

    def start(self) -> None:
        """Start the inference thread."""
        self._thread.start()

    def stop(self) -> None:
        """Let the queued images finish, then end the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    @property
    def alive(self) -> bool:
        """True while the inference thread runs."""
        return self._thread.is_alive()

    @property
    def waiting(self) -> int:
        """Images queued and not yet in a batch."""
        return self._queue.qsize()

    def submit(self, images: Sequence[torch.Tensor]) -> list[Future]:
        """Queue uint8 images (3, S, S); raises `QueueFull` (queueing none of them) when they do not all fit."""
        futures = []
        for image in images:
            future: Future = Future()
            try:
                self._queue.put_nowait((image, future))
            except queue.Full:
                for queued in futures:
                    queued.cancel()
                raise QueueFull(f"{self._queue.maxsize} images are already waiting") from None
            futures.append(future)
        return futures

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while len(batch) < self.max_batch_size:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._run([entry for entry in batch if entry[1].set_running_or_notify_cancel()])
            if stop:
                return

    def _run(self, batch: list[tuple[torch.Tensor, Future]]) -> None:
        if not batch:
            return
        try:
            probabilities = self.predict(torch.stack([image for image, _ in batch]))
        except Exception as error:  # any model failure goes back to the requests that asked, not up this thread
            logger.exception("Inference failed on a batch of %d images", len(batch))
            for _, future in batch:
                future.set_exception(error)
            return
        self.batches += 1
        self.images += len(batch)
        finite = torch.isfinite(probabilities).all(dim=1).tolist()
        if not all(finite):
            logger.error(
                "The model gave probabilities that are not finite to %d of %d images", finite.count(False), len(batch)
            )
        for (_, future), row, ok in zip(batch, probabilities.tolist(), finite):
            if ok:
                future.set_result(row)
            else:
                future.set_exception(NotFinite("probabilities that are not all finite numbers (NaN or infinity)"))
