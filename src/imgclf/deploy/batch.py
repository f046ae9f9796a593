"""Predicting a very large folder into a CSV file: rows written as they come, resumable, and shared out
between processes (torchrun), each writing a part that the first process merges in input order.

imgclf predict RUN photos/ --format csv --output predictions.csv             # Ctrl-C, then the same with --resume
imgclf predict RUN photos/ --format csv --output predictions.csv --nproc 4   # runs torchrun --standalone ...
torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29400 \\
    -m imgclf predict RUN photos/ --format csv --output shared/predictions.csv

Memory stays flat as the folder grows: the list of file names is the only thing held for every image;
predictions are written and dropped a batch at a time.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from imgclf.config import ImgclfError
from imgclf.files import CsvAppender, atomic_writer, inert_cell

if TYPE_CHECKING:  # the types only: this module stays free of PyTorch, for the command line's output
    from imgclf.deploy.predictor import Prediction, Run

T = TypeVar("T")

Progress = Callable[[int, int], None]
"""`progress(done, total)`: called before the first batch and after each, with the images of this process's
share done so far (those done before a resume included)."""


class PredictionsFileError(ImgclfError):
    """A predictions CSV cannot be continued: it was written by another run or for other images."""


class UnreadableImagesError(ImgclfError):
    """No image could be read, or (with `--strict`) some could not."""


class PredictionInterrupted(ImgclfError):
    """Ctrl-C stopped a prediction; the CSV keeps every row written, and the message says how to go on."""

    exit_code = 130  # as a shell reports a command stopped by Ctrl-C


def csv_header(class_names: Sequence[str]) -> list[str]:
    """The columns of a predictions CSV: file, label, index, probability, one `p_<class>` per class, error."""
    return ["file", "label", "index", "probability", *[f"p_{name}" for name in class_names], "error"]


def csv_row(prediction: Prediction, class_names: Sequence[str]) -> list[str]:
    """One image's row under `csv_header`: probabilities to 6 decimals, empty cells where there is no value."""
    p = prediction
    return [
        p.file,
        p.label or "",
        "" if p.index is None else str(p.index),
        "" if p.probability is None else f"{p.probability:.6f}",
        *[f"{p.probabilities[name]:.6f}" if p.probabilities else "" for name in class_names],
        p.error or "",
    ]


@dataclass
class Tally:
    """How many images were predicted, how many of them could not be read, and the first of those (file, why)."""

    images: int = 0
    unreadable: int = 0
    first_unreadable: tuple[str, str] | None = None

    def count(self, file: str, error: str | None) -> None:
        """Count one image; `error` is why it could not be read, or None."""
        self.images += 1
        if error is not None:
            self.unreadable += 1
            self.first_unreadable = self.first_unreadable or (file, error)

    def add(self, other: Tally) -> None:
        """Count `other`'s images too (its first unreadable one comes after this tally's)."""
        self.images += other.images
        self.unreadable += other.unreadable
        self.first_unreadable = self.first_unreadable or other.first_unreadable

    def check(self, strict: bool = False) -> None:
        """Raise `UnreadableImagesError` when no image could be read, or with `strict` when any could not."""
        if not self.unreadable or (self.unreadable < self.images and not strict):
            return
        file, reason = self.first_unreadable
        if self.images == 1:
            raise UnreadableImagesError(f"{file} could not be read: {reason}.")
        if self.unreadable == self.images:
            raise UnreadableImagesError(
                f"None of the {self.images} images could be read; the first, {file}, could not be read: {reason}."
            )
        raise UnreadableImagesError(
            f"{self.unreadable} of {self.images} images could not be read, and --strict fails on any; the first, "
            f"{file}, could not be read: {reason}. Received: --strict. Leave out --strict to accept a few."
        )


@dataclass
class Recorded:
    """What a predictions CSV already holds: its whole rows, where the last ends (bytes), their tally."""

    rows: int = 0
    end: int = 0
    tally: Tally = field(default_factory=Tally)


def whole_rows(path: Path, header: Sequence[str]) -> Iterator[tuple[list[str], int]]:
    """(row, byte offset of its end) for each whole row of the CSV `path` after `header`, in order.

    A last row cut short (an interrupted writer, a full disk) ends the rows. Raises `PredictionsFileError`
    when the file's header is not `header`; an empty file has no rows.
    """
    with path.open("rb") as file:
        offset = 0

        def lines() -> Iterator[str]:
            nonlocal offset
            for line in file:
                if not line.endswith(b"\n"):
                    return
                offset += len(line)
                yield line.decode("utf-8", errors="replace")

        reader = csv.reader(lines(), strict=True)
        first = next(reader, None)
        if first is None:
            return
        if first != list(header):
            raise PredictionsFileError(
                f"{path} is not a predictions CSV of this run: its columns are {first}, this run's are "
                f"{list(header)}. Give a new file, or the file an interrupted run of this model wrote."
            )
        while True:
            try:
                row = next(reader)
            except (StopIteration, csv.Error):  # csv.Error: a quoted field cut short
                return
            if len(row) != len(header):
                return
            yield row, offset


def read_recorded(path: Path, header: Sequence[str], files: Sequence[str]) -> Recorded:
    """The whole rows of `path`, checked to be those of the first of `files`, in order; nothing if no file.

    Raises `PredictionsFileError` when a row names another file than the input in its place.
    """
    recorded = Recorded()
    if not path.exists():
        return recorded
    for row, end in whole_rows(path, header):
        expected = files[recorded.rows] if recorded.rows < len(files) else None
        if expected is None or row[0] != inert_cell(expected):  # the CSV holds names as written
            raise PredictionsFileError(
                f"{path} does not continue these inputs: its row {recorded.rows + 1} is {row[0]!r} where the "
                f"inputs have {expected!r}. Received: --resume. Resume with the PATHs, --batch-size and --nproc "
                "of the run that wrote it, or give a new --output."
            )
        recorded.rows += 1
        recorded.end = end
        recorded.tally.count(row[0], row[-1] or None)
    return recorded


class Group(Protocol):
    """The processes predicting together, as this one sees them (`training.distributed.Processes` is one)."""

    rank: int
    world_size: int

    def gather(self, items: list) -> list:
        """Every process's `items`, in rank order, on every process."""


@dataclass(frozen=True)
class OneProcess:
    """The `Group` of a process predicting alone."""

    rank: int = 0
    world_size: int = 1

    def gather(self, items: list) -> list:
        return items


def share(count: int, batch_size: int, rank: int, world_size: int) -> range:
    """Process `rank`'s contiguous share of `count` inputs: whole batches, spread as evenly as they go.

    Shares start at a multiple of `batch_size`, so every batch holds the images one process would batch.

    >>> [share(100, 32, rank, 2) for rank in range(2)]
    [range(0, 64), range(64, 100)]
    """
    batches = -(-count // batch_size)
    first, last = rank * batches // world_size, (rank + 1) * batches // world_size
    return range(min(count, first * batch_size), min(count, last * batch_size))


def part_path(path: Path, rank: int, world_size: int) -> Path:
    """Where process `rank` of `world_size` writes its rows before the first process merges them into `path`."""
    return path.with_name(f"{path.name}.part-{rank}-of-{world_size}")


def predict_to_csv(
    run: Run,
    files: Sequence[str],
    path: str | Path,
    batch_size: int = 32,
    resume: bool = False,
    group: Group = OneProcess(),
    progress: Progress | None = None,
) -> Tally:
    """Predict `files` into the CSV `path` (`csv_header` columns), writing each batch's rows as it is done.

    `resume` keeps the whole rows an interrupted call left and predicts the rest (a missing file starts
    afresh). With several processes in `group`, each predicts a contiguous `share` of the rest into its
    `part_path`, and the first merges the parts into `path` in input order once all are done.
    Returns the tally over every process. Raises `PredictionInterrupted` on Ctrl-C.

    >>> predict_to_csv(imgclf.load("runs/seed-cnn"), list_images(["photos"]), "predictions.csv", resume=True)
    Tally(images=1204, unreadable=1, first_unreadable=('photos/empty.jpg', 'empty file (0 bytes)'))
    """
    path = Path(path)
    header = csv_header(run.class_names)
    done = read_recorded(path, header, files) if resume else Recorded()
    if group.world_size == 1:
        return _write_rows(run, files, path, done, batch_size, progress)
    mine = share(len(files) - done.rows, batch_size, group.rank, group.world_size)
    my_files = files[done.rows + mine.start : done.rows + mine.stop]
    part = part_path(path, group.rank, group.world_size)
    my_done = read_recorded(part, header, my_files) if resume else Recorded()
    tallies = group.gather([_write_rows(run, my_files, part, my_done, batch_size, progress)])
    if group.rank == 0:
        parts = [part_path(path, rank, group.world_size) for rank in range(group.world_size)]
        merge_parts(path, header, done.end, parts)
    total = done.tally
    for tally in tallies:
        total.add(tally)
    return total


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """`items` in lists of `size` (the last one shorter), taken from `items` only as they are needed."""
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _write_rows(
    run: Run, files: Sequence[str], path: Path, done: Recorded, batch_size: int, progress: Progress | None
) -> Tally:
    """Append the rows of `files` after the `done` ones to `path`, a batch at a time; the tally of all of them."""
    tally, written = done.tally, done.rows
    if progress is not None:
        progress(written, len(files))
    try:
        with CsvAppender(path, csv_header(run.class_names), done.end) as csv_file:
            for batch in batched(run.predict_iter(files[done.rows :], batch_size), batch_size):
                for prediction in batch:
                    tally.count(prediction.file, prediction.error)
                csv_file.write([csv_row(prediction, run.class_names) for prediction in batch])
                written += len(batch)
                if progress is not None:
                    progress(written, len(files))
    except KeyboardInterrupt:
        raise PredictionInterrupted(
            f"Interrupted; {path} holds the first {written} of its {len(files)} rows. Run the same command with "
            "--resume to predict the rest."
        ) from None
    return tally


def merge_parts(path: Path, header: Sequence[str], keep_bytes: int, parts: Sequence[Path]) -> None:
    """Replace `path` by its first `keep_bytes` (its header if 0) and the rows of `parts` in order; delete them."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(header)
    header_bytes = buffer.getvalue().encode("utf-8")
    with atomic_writer(path) as merged:
        if keep_bytes:
            os.truncate(path, keep_bytes)  # only a row cut short goes
            with path.open("rb") as kept:
                shutil.copyfileobj(kept, merged)
        else:
            merged.write(header_bytes)
        for part in parts:
            with part.open("rb") as rows:
                rows.seek(len(header_bytes))
                shutil.copyfileobj(rows, merged)
    for part in parts:
        part.unlink()
