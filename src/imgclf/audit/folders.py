"""Auditing labelled folders, one per split: index them, read every file once, group the duplicates."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from imgclf.audit.duplicates import find_duplicates
from imgclf.audit.inspection import AuditedFile, inspect_files
from imgclf.audit.options import DEFAULT_MIN_SIZE, DEFAULT_NEAR_THRESHOLD, HASH_BITS
from imgclf.audit.report import AuditReport, SplitSummary
from imgclf.config import ImgclfError
from imgclf.data.folders import DatasetError, FolderIndex, check_same_classes, imbalance_warning, index_folder
from imgclf.data.images import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)


def _validate(folders: Mapping[str, str | Path], near_threshold: int, min_size: int, workers: int | None) -> None:
    if not folders:
        raise ImgclfError("Nothing to audit: give at least one data folder.")
    if not 0 <= near_threshold < HASH_BITS:
        raise ImgclfError(
            f"--near-threshold must be a number of differing bits from 0 to {HASH_BITS - 1}. "
            f"Received: near_threshold={near_threshold}. The default {DEFAULT_NEAR_THRESHOLD} finds resized "
            "and recompressed copies; 0 finds only pictures whose hashes are equal."
        )
    if min_size < 0:
        raise ImgclfError(f"--min-size must be 0 or more pixels. Received: min_size={min_size}.")
    if workers is not None and workers < 1:
        raise ImgclfError(f"--workers must be at least 1. Received: workers={workers}.")
    seen: dict[Path, str] = {}
    for name, folder in folders.items():
        resolved = Path(folder).resolve()
        if resolved in seen:
            raise DatasetError(
                f"The {seen[resolved]} and {name} folders are the same folder ({folder}); "
                "give each split its own folder."
            )
        seen[resolved] = name


def _summarize_split(name: str, index: FolderIndex) -> SplitSummary:
    return SplitSummary(
        name=name,
        root=index.root,
        class_names=index.class_names,
        class_counts=index.class_counts(),
        skipped_hidden=index.skipped_hidden,
        skipped_not_image=index.skipped_not_image,
        loose_files=index.loose_files,
        imbalance=imbalance_warning(index),
    )


def audit_folders(
    folders: Mapping[str, str | Path],
    near_threshold: int = DEFAULT_NEAR_THRESHOLD,
    min_size: int = DEFAULT_MIN_SIZE,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> AuditReport:
    """Audit labelled folders, one per split name (`{"train": ..., "val": ..., "test": ...}`); never writes.

    Args:
        near_threshold: the most pHash bits (of 64) two pictures may differ in to count as near-duplicates.
            Resized, recompressed, grey or contrast-changed copies differ by 0-2, brightened ones by up to 6;
            different photos of similar scenes start around 8. Crops and mirror images are not found.
        min_size: images whose short side has fewer pixels are listed as tiny.
        workers: worker processes decoding files (default: one per CPU core; 1 decodes in this process).
        progress: called as `progress(done, total)` after each file, from the calling thread.
    """
    _validate(folders, near_threshold, min_size, workers)
    started = time.perf_counter()
    indexes = {name: index_folder(folder) for name, folder in folders.items()}
    report_warnings = _folder_warnings(indexes)
    files = _audit_files(indexes, workers or os.cpu_count() or 1, progress)
    groups = find_duplicates(files, near_threshold)
    seconds = time.perf_counter() - started
    log.debug("Audited %d files in %.1f s", len(files), seconds)
    return AuditReport(
        splits=[_summarize_split(name, index) for name, index in indexes.items()],
        files=files,
        groups=groups,
        near_threshold=near_threshold,
        min_size=min_size,
        warnings=report_warnings,
        seconds=seconds,
    )


def _folder_warnings(indexes: Mapping[str, FolderIndex]) -> list[str]:
    """Classes that differ from the first split's, and files each split's indexing passed over."""
    found = []
    first_name, first = next(iter(indexes.items()))
    for name, index in indexes.items():
        if name != first_name:
            try:
                check_same_classes(first, index)
            except DatasetError as error:
                found.append(str(error))
        if index.loose_files:
            found.append(
                f"{index.root} holds {index.loose_files} files outside any class folder; they were not audited."
            )
        if index.skipped_not_image:
            found.append(
                f"{index.root} holds {index.skipped_not_image} files whose extension is not an image one "
                f"({', '.join(IMAGE_EXTENSIONS)}); they were not audited."
            )
    return found


def _audit_files(
    indexes: Mapping[str, FolderIndex], workers: int, progress: Callable[[int, int], None] | None
) -> list[AuditedFile]:
    placed = [
        (name, index.class_names[label], path, str(Path(path).relative_to(index.root)))
        for name, index in indexes.items()
        for path, label in zip(index.files, index.labels)
    ]
    facts = inspect_files([path for _, _, path, _ in placed], workers, progress)
    return [
        AuditedFile(split, class_name, name, file_facts)
        for (split, class_name, _, name), file_facts in zip(placed, facts)
    ]
