"""Dataset audit: class counts, image statistics, unreadable files, duplicates and leakage between splits, image
quality, and with a pretrained backbone label issues, outliers and embedding near-duplicates.

    imgclf audit photos/training_set --val photos/val_set --test photos/test_set --fail-on leakage,corrupt

Each file is read once (`inspection.py`): its bytes are hashed (exact duplicates) and decoded from the same
bytes, in JPEG draft mode, to a small picture whose perceptual hash (pHash, 64 bits) finds near-duplicates
(`duplicates.py`): the same photo resized, recompressed, turned grey or with its contrast changed. Groups that
span splits are leakage; groups whose files sit in different classes are label conflicts. The same small
picture is measured for quality (`quality.py`: too dark, too bright, blurry, ...). Given a `model`, a backbone's
features (`embeddings.py`, through the feature cache) find embedding near-duplicates and outliers, and
out-of-fold heads with cleanlab find suspected label errors (`labels.py`). `audit_folders` (`folders.py`)
returns an `AuditReport` (`report.py`); `write_audit` (`writing.py`) saves `audit.json`, a self-contained
`audit.html` with thumbnails, and `label-issues.csv` for `imgclf fix`.

>>> report = audit_folders({"train": "photos/training_set", "val": "photos/val_set"})
>>> [group.names() for group in report.groups if group.leakage]
[['train: planes/a.jpg', 'val: planes/a.jpg']]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from imgclf.audit.options import (
    DEFAULT_MIN_SIZE,
    DEFAULT_MODEL,
    DEFAULT_NEAR_THRESHOLD,
    DEFAULT_SIMILARITY,
    FAIL_ON_CHOICES,
    HASH_BITS,
)

if TYPE_CHECKING:
    from imgclf.audit.duplicates import DuplicateGroup, find_duplicates
    from imgclf.audit.embeddings import (
        Embeddings,
        Outlier,
        default_model,
        embed_files,
        find_embedding_duplicates,
        find_outliers,
    )
    from imgclf.audit.folders import audit_folders
    from imgclf.audit.inspection import AuditedFile, FileFacts, extension_matches, inspect_file
    from imgclf.audit.labels import LabelIssue, find_label_issues
    from imgclf.audit.quality import Looks, QualityIssue, find_quality_issues, measure_looks
    from imgclf.audit.report import AuditReport, SplitSummary
    from imgclf.audit.writing import LABEL_ISSUES_COLUMNS, render_html, write_audit, write_label_issues

# The module each name lives in. They load on first use, so that the options above (what the command line's
# parser offers) come without numpy, Pillow, imagehash or torch.
_MODULE_OF = {
    "AuditReport": "report",
    "AuditedFile": "inspection",
    "DuplicateGroup": "duplicates",
    "Embeddings": "embeddings",
    "FileFacts": "inspection",
    "LABEL_ISSUES_COLUMNS": "writing",
    "LabelIssue": "labels",
    "Looks": "quality",
    "Outlier": "embeddings",
    "QualityIssue": "quality",
    "SplitSummary": "report",
    "audit_folders": "folders",
    "default_model": "embeddings",
    "embed_files": "embeddings",
    "extension_matches": "inspection",
    "find_duplicates": "duplicates",
    "find_embedding_duplicates": "embeddings",
    "find_label_issues": "labels",
    "find_outliers": "embeddings",
    "find_quality_issues": "quality",
    "inspect_file": "inspection",
    "measure_looks": "quality",
    "render_html": "writing",
    "write_audit": "writing",
    "write_label_issues": "writing",
}

__all__ = [
    "DEFAULT_MIN_SIZE",
    "DEFAULT_MODEL",
    "DEFAULT_NEAR_THRESHOLD",
    "DEFAULT_SIMILARITY",
    "FAIL_ON_CHOICES",
    "HASH_BITS",
    "LABEL_ISSUES_COLUMNS",
    "AuditReport",
    "AuditedFile",
    "DuplicateGroup",
    "Embeddings",
    "FileFacts",
    "LabelIssue",
    "Looks",
    "Outlier",
    "QualityIssue",
    "SplitSummary",
    "audit_folders",
    "default_model",
    "embed_files",
    "extension_matches",
    "find_duplicates",
    "find_embedding_duplicates",
    "find_label_issues",
    "find_outliers",
    "find_quality_issues",
    "inspect_file",
    "measure_looks",
    "render_html",
    "write_audit",
    "write_label_issues",
]


def __getattr__(name: str) -> object:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"imgclf.audit.{_MODULE_OF[name]}"), name)
