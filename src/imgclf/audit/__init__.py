"""Dataset audit: class counts, image statistics, unreadable files, duplicates and leakage between splits.

    imgclf audit photos/training_set --val photos/val_set --test photos/test_set --fail-on leakage,corrupt

Each file is read once (`inspection.py`): its bytes are hashed (exact duplicates) and decoded from the same
bytes, in JPEG draft mode, to a small picture whose perceptual hash (pHash, 64 bits) finds near-duplicates
(`duplicates.py`): the same photo resized, recompressed, turned grey or with its contrast changed. Groups that
span splits are leakage; groups whose files sit in different classes are label conflicts. `audit_folders`
(`folders.py`) returns an `AuditReport` (`report.py`); `write_audit` (`writing.py`) saves `audit.json` and a
self-contained `audit.html` with thumbnails of every duplicate group.

>>> report = audit_folders({"train": "photos/training_set", "val": "photos/val_set"})
>>> [group.names() for group in report.groups if group.leakage]
[['train: planes/a.jpg', 'val: planes/a.jpg']]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from imgclf.audit.options import DEFAULT_MIN_SIZE, DEFAULT_NEAR_THRESHOLD, FAIL_ON_CHOICES, HASH_BITS

if TYPE_CHECKING:
    from imgclf.audit.duplicates import DuplicateGroup, find_duplicates
    from imgclf.audit.folders import audit_folders
    from imgclf.audit.inspection import AuditedFile, FileFacts, extension_matches, inspect_file
    from imgclf.audit.report import AuditReport, SplitSummary
    from imgclf.audit.writing import render_html, write_audit

# The module each name lives in. They load on first use, so that the options above (what the command line's
# parser offers) come without numpy, Pillow, imagehash or torch.
_MODULE_OF = {
    "AuditReport": "report",
    "AuditedFile": "inspection",
    "DuplicateGroup": "duplicates",
    "FileFacts": "inspection",
    "SplitSummary": "report",
    "audit_folders": "folders",
    "extension_matches": "inspection",
    "find_duplicates": "duplicates",
    "inspect_file": "inspection",
    "render_html": "writing",
    "write_audit": "writing",
}

__all__ = [
    "DEFAULT_MIN_SIZE",
    "DEFAULT_NEAR_THRESHOLD",
    "FAIL_ON_CHOICES",
    "HASH_BITS",
    "AuditReport",
    "AuditedFile",
    "DuplicateGroup",
    "FileFacts",
    "SplitSummary",
    "audit_folders",
    "extension_matches",
    "find_duplicates",
    "inspect_file",
    "render_html",
    "write_audit",
]


def __getattr__(name: str) -> object:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"imgclf.audit.{_MODULE_OF[name]}"), name)
