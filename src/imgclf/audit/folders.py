"""Auditing labelled folders, one per split: index them, read every file once, group the duplicates, and with a
backbone look for label issues, outliers and embedding near-duplicates."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from imgclf.audit.duplicates import find_duplicates
from imgclf.audit.embeddings import check_model, embed_files, find_embedding_duplicates, find_outliers
from imgclf.audit.inspection import AuditedFile, inspect_files
from imgclf.audit.labels import find_label_issues
from imgclf.audit.options import DEFAULT_MIN_SIZE, DEFAULT_NEAR_THRESHOLD, DEFAULT_SIMILARITY, HASH_BITS
from imgclf.audit.report import AuditReport, SplitSummary
from imgclf.config import ImgclfError
from imgclf.data.folders import DatasetError, FolderIndex, check_same_classes, imbalance_warning, index_folder
from imgclf.data.images import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)


def _validate(
    folders: Mapping[str, str | Path],
    near_threshold: int,
    min_size: int,
    workers: int | None,
    model: str | None,
    similarity: float,
) -> None:
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
    if not 0 < similarity <= 1:
        raise ImgclfError(
            f"--similarity must be a cosine similarity above 0 and at most 1. Received: similarity={similarity}. "
            f"The default {DEFAULT_SIMILARITY} finds mirrored and slightly cropped copies."
        )
    if model is not None:
        check_model(model)
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
    model: str | None = None,
    similarity: float = DEFAULT_SIMILARITY,
) -> AuditReport:
    """Audit labelled folders, one per split name (`{"train": ..., "val": ..., "test": ...}`); never writes.

    Args:
        near_threshold: the most pHash bits (of 64) two pictures may differ in to count as near-duplicates.
            Resized, recompressed, grey or contrast-changed copies differ by 0-2, brightened ones by up to 6;
            different photos of similar scenes start around 8. Crops and mirror images are not found.
        min_size: images whose short side has fewer pixels are listed as tiny.
        workers: worker processes decoding files (default: one per CPU core; 1 decodes in this process).
        progress: called as `progress(done, total)` after each file, from the calling thread (and with a
            model, after each chunk of features, counting on from the files).
        model: a pretrained backbone (`efficientnet_lite0`, the command's default) whose features find label
            issues, outliers and embedding near-duplicates; None skips them.
        similarity: the lowest cosine similarity of two pictures' features that makes them near-duplicates.
    """
    _validate(folders, near_threshold, min_size, workers, model, similarity)
    started = time.perf_counter()
    indexes = {name: index_folder(folder) for name, folder in folders.items()}
    report = AuditReport(
        splits=[_summarize_split(name, index) for name, index in indexes.items()],
        files=_audit_files(indexes, workers or os.cpu_count() or 1, progress),
        groups=[],
        near_threshold=near_threshold,
        min_size=min_size,
        warnings=_folder_warnings(indexes),
        model=model,
        similarity=similarity,
    )
    report.groups = find_duplicates(report.files, near_threshold)
    if model is not None:
        _look_with_model(report, model, progress)
    report.seconds = time.perf_counter() - started
    log.debug("Audited %d files in %.1f s", len(report.files), report.seconds)
    return report


def _look_with_model(report: AuditReport, model: str, progress: Callable[[int, int], None] | None) -> None:
    """Fill in the report's label issues, outliers and embedding near-duplicates from `model`'s features."""
    read = len(report.files)

    def features_done(done: int, total: int) -> None:
        if progress is not None:  # one bar: the files read, then the features computed
            progress(read + done, read + total)

    embeddings = embed_files(report.files, model, features_done)
    report.label_issues, label_warnings = find_label_issues(embeddings)
    report.warnings += label_warnings
    report.outliers = find_outliers(embeddings)
    report.embedding_groups = find_embedding_duplicates(embeddings, report.groups, report.similarity)


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
