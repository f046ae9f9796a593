"""Sorting photos into one folder per predicted class: `imgclf predict RUN photos/ --sort-into sorted/`.

Each image is copied (or hard-linked) into `sorted/<label>/`, those below the run's `--min-confidence` into
`sorted/unsure/`; `sorted/predictions.csv` records every image, the unreadable ones with their error, and
where each copy went. The photos themselves are only read. Sorting again skips the images the CSV records.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from imgclf.config import ImgclfError
from imgclf.deploy.batch import PredictionInterrupted, Progress, Tally, batched, csv_header, csv_row, whole_rows
from imgclf.deploy.predictor import Prediction, Run
from imgclf.files import CsvAppender, inert_cell, interrupts_held
from imgclf.runs import UNSURE

log = logging.getLogger(__name__)

SORTED_CSV = "predictions.csv"
COPY_COLUMN = "sorted_to"
# Linking fails with these where copying works: another filesystem, or one without hard links.
NO_LINK_ERRORS = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP)


class SortingError(ImgclfError):
    """The photos cannot be sorted into the folder asked for: an unsafe class name, or a folder inside the photos."""


@dataclass
class Sorted:
    """What `sort_into` did: the images it sorted now (per folder), those it skipped as sorted before, the CSV."""

    tally: Tally
    per_folder: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    csv_path: Path | None = None


def check_folder_names(class_names: Sequence[str], min_confidence: float | None) -> None:
    """Raise `SortingError` unless every class name is a safe folder name of its own.

    Class names come from the run's config.json, so they are checked like any user input: not empty, not `.`
    or `..`, no `/`, `\\` or NUL, not hidden, not the CSV's name, no two the same but for case (one folder on
    macOS and Windows), and not `unsure` when some images may be unsure.
    """
    taken = {SORTED_CSV.casefold()} | ({UNSURE} if min_confidence is not None else set())
    for name in class_names:
        unsafe = not name or name.startswith(".") or any(c in name for c in "/\\\0") or name.casefold() in taken
        if unsafe:
            raise SortingError(
                f"The class name {name!r} cannot be a folder of --sort-into. Received: class_names={class_names}. "
                "Rename the class in the run's config.json (or its training folder, and train again), or "
                "predict without --sort-into."
            )
        taken.add(name.casefold())


def check_out_dir(out_dir: Path, paths: Sequence[str | os.PathLike]) -> None:
    """Raise `SortingError` when `out_dir` is one of the folders `paths` or inside one (sorting again would
    sort the copies)."""
    for path in map(Path, paths):
        if path.is_dir() and out_dir.resolve().is_relative_to(path.resolve()):
            raise SortingError(
                f"--sort-into {out_dir} is inside the photos to sort, {path}: sorting again would sort the copies. "
                f"Received: --sort-into={out_dir}. Choose a folder outside {path}."
            )


def sort_into(
    run: Run,
    files: Sequence[str],
    out_dir: str | Path,
    link: bool = False,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> Sorted:
    """Copy (`link`: hard-link) each of `files` into `out_dir/<label>/` and record it in `out_dir/predictions.csv`.

    A name already taken in a folder gets a number (`photo-2.jpg`): nothing is overwritten. Files the CSV
    already records are skipped, so an interrupted or repeated call only does what is left. Where a hard link
    is impossible (another filesystem) the image is copied, and a warning says so once.

    >>> sort_into(imgclf.load("runs/seed-cnn"), list_images(["photos"]), "sorted").per_folder
    Counter({'cars': 12, 'planes': 9, 'unsure': 2})
    """
    check_folder_names(run.class_names, run.min_confidence)
    out_dir = Path(out_dir)
    header = [*csv_header(run.class_names), COPY_COLUMN]
    csv_path = out_dir / SORTED_CSV
    done, end = _recorded_files(csv_path, header)
    todo = [file for file in files if inert_cell(file) not in done]  # the CSV holds names as written
    result = Sorted(Tally(), skipped=len(files) - len(todo), csv_path=csv_path)
    del done
    placer = _Placer(out_dir, link)
    if progress is not None:
        progress(0, len(todo))
    try:
        with CsvAppender(csv_path, header, end) as csv_file:
            for batch in batched(run.predict_iter(todo, batch_size), batch_size):
                with interrupts_held():  # a copy and its row go together: the CSV stays the record
                    csv_file.write([_sort_one(prediction, placer, result, run.class_names) for prediction in batch])
                if progress is not None:
                    progress(result.tally.images, len(todo))
    except KeyboardInterrupt:
        raise PredictionInterrupted(
            f"Interrupted; {csv_path} records the {result.skipped + result.tally.images} images sorted so far. "
            "Run the same command again to sort the rest."
        ) from None
    return result


def _recorded_files(csv_path: Path, header: Sequence[str]) -> tuple[set[str], int]:
    """The files the sorting CSV records, and the byte offset where its last whole row ends (0: no CSV yet)."""
    files, end = set(), 0
    if csv_path.exists():
        for row, row_end in whole_rows(csv_path, header):
            files.add(row[0])
            end = row_end
    return files, end


def _sort_one(prediction: Prediction, placer: _Placer, result: Sorted, class_names: Sequence[str]) -> list[str]:
    """Place one image in its label's folder; its CSV row, with where it went."""
    result.tally.count(prediction.file, prediction.error)
    if prediction.error is not None:
        return [*csv_row(prediction, class_names), ""]
    result.per_folder[prediction.label] += 1
    placed = placer.place(Path(prediction.file), prediction.label)
    return [*csv_row(prediction, class_names), placed.relative_to(placer.out_dir).as_posix()]


class _Placer:
    """Puts images into the folders of `out_dir`, by copy or hard link, under names not yet taken."""

    def __init__(self, out_dir: Path, link: bool):
        self.out_dir = out_dir
        self.link = link

    def place(self, source: Path, folder_name: str) -> Path:
        """Copy or link `source` into `out_dir/folder_name/`, numbering its name while it is taken; the new path."""
        folder = self.out_dir / folder_name
        folder.mkdir(parents=True, exist_ok=True)
        number = 1
        while True:
            name = source.name if number == 1 else f"{source.stem}-{number}{source.suffix}"
            try:
                self._put(source, folder / name)
                return folder / name
            except FileExistsError:
                number += 1

    def _put(self, source: Path, target: Path) -> None:
        """Link or copy `source` to `target`; raises `FileExistsError`, never replacing a file."""
        if self.link:
            try:
                os.link(source, target)
                return
            except OSError as error:
                if error.errno not in NO_LINK_ERRORS:
                    raise
                self.link = False
                log.warning("Cannot hard-link %s into %s (%s); copying instead.", source, self.out_dir, error.strerror)
        with source.open("rb") as original:
            copy = target.open("xb")  # a FileExistsError here leaves the file that is there alone
            try:
                with copy:
                    shutil.copyfileobj(original, copy)
                shutil.copystat(source, target)
            except BaseException:
                target.unlink(missing_ok=True)
                raise
