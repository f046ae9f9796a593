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
