"""Labelled images from a CSV (fastai's `from_df`, Keras's `flow_from_dataframe`): columns `file,label`, an
optional `split`, paths relative to an images folder.

imgclf train --labels labels.csv --images photos/

```
file,label,split
cars/car1.jpg,cars,train
plane7.jpg,planes,val
```

Rows are numbered as a spreadsheet shows them (the header is row 1), so that every error points at its row.
The table becomes the `FolderIndex` a class folder gives, so training reads it unchanged. A label cell may hold
several labels separated by `;` (`"shirt;hat"`): the table is then multi-label (see `FolderIndex.multi_label`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePath

from imgclf.data.csv_rows import is_blank, read_csv_rows
from imgclf.data.folders import MAX_MULTI_LABEL_CLASSES, DatasetError, FolderIndex
from imgclf.data.images import IMAGE_EXTENSIONS, is_image_file

COLUMNS = ("file", "label")
SPLIT_COLUMN = "split"
LABEL_SEPARATOR = ";"
SPLITS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
"""The `split` column's accepted values (any case) and the split each names."""
ROWS_SHOWN = 5


@dataclass
class LabelsTable:
    """A labels CSV read and checked: every row's image as one index, each row's split and spreadsheet row."""

    path: str
    index: FolderIndex
    rows: list[int]
    splits: list[str] | None
    """"train", "val" or "test" per image; None when the CSV has no split column."""

    def part(self, split: str) -> FolderIndex:
        """The images of `split` ("train", "val" or "test"); every image when the CSV has no split column."""
        if self.splits is None:
            return self.index
        return self.index.subset([i for i, name in enumerate(self.splits) if name == split])


@dataclass
class _Row:
    number: int
    file: str
    labels: tuple[str, ...]
    split: str | None

    @property
    def label(self) -> str:
        return LABEL_SEPARATOR.join(self.labels)


def read_labels(path: str | Path, images: str | Path, multi_label: bool = False) -> LabelsTable:
    """Read `path` (columns `file,label`, optional `split`) into sorted classes and files under `images`.

    The table is multi-label when `multi_label` is set or a label cell holds several labels (`"shirt;hat"`).
    Raises `DatasetError` in one line naming the row for a missing column or cell, a path leading out of
    `images`, a missing or non-image file, a file listed twice, an unknown split, or fewer than 2 classes
    (3 in multi-label data, at most 63). Blank rows are passed over.

    >>> table = read_labels("labels.csv", "photos")
    >>> table.index.class_names, table.part("val").files[:1]
    (['cars', 'planes'], ['photos/plane7.jpg'])
    """
    header, records = _read_records(Path(path))
    rows = _rows(path, header, records)
    _check_paths(path, images, rows)
    multi_label = multi_label or any(len(row.labels) > 1 for row in rows)
    class_names = sorted({label for row in rows for label in row.labels})
    _check_class_count(path, class_names, multi_label)
    rows.sort(key=lambda row: (row.labels, row.file))  # sorted classes, then files, as a folder's index is
    files = [str(Path(images, row.file)) for row in rows]
    if multi_label:
        labels = [sum(1 << class_names.index(label) for label in row.labels) for row in rows]
    else:
        labels = [class_names.index(row.label) for row in rows]
    index = FolderIndex(str(path), class_names, files, labels, multi_label=multi_label)
    splits = [row.split for row in rows] if SPLIT_COLUMN in header else None
    return LabelsTable(str(path), index, [row.number for row in rows], splits)


def _check_class_count(path: str | Path, class_names: list[str], multi_label: bool) -> None:
    if len(class_names) < 2:
        raise DatasetError(
            f"{path} names one class only. Received: label={class_names}. A classifier needs 2 or more classes: "
            "label the images of another class too."
        )
    if multi_label and len(class_names) > MAX_MULTI_LABEL_CLASSES:
        raise DatasetError(
            f"{path} is multi-label with {len(class_names)} labels. Received: label={class_names}. Multi-label "
            f"data takes 2 to {MAX_MULTI_LABEL_CLASSES} labels; merge or drop some."
        )


def file_facts(path: str | Path) -> dict[str, object]:
    """What a run saves of its labels CSV: its path, the SHA-256 of its bytes and its count of non-blank rows."""
    data = Path(path).read_bytes()
    rows = sum(1 for row in read_csv_rows(data, path, DatasetError)[1:] if not is_blank(row))
    return {"labels": str(path), "labels_sha256": hashlib.sha256(data).hexdigest(), "labels_rows": rows}


def _read_records(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The CSV's column names (stripped, lower case) and its other records with their spreadsheet row numbers."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise DatasetError(
            f"Labels file {path} does not exist or is not a file. Received: --labels={path}. "
            "Give a CSV with the columns file,label."
        ) from None
    records = list(enumerate(read_csv_rows(data, path, DatasetError), start=1))
    if not records:
        raise DatasetError(f"{path} is empty. Received: --labels={path}. Its first row names the columns file,label.")
    header = [cell.strip().lower() for cell in records[0][1]]
    _check_header(path, header)
    return header, records[1:]


def _check_header(path: Path, header: list[str]) -> None:
    missing = [name for name in COLUMNS if name not in header]
    if missing and len(header) == 1 and ";" in header[0]:
        raise DatasetError(
            f"{path} row 1 is separated by semicolons. Received: {header[0]!r}. Save the CSV with commas "
            'between columns (a cell of several labels is quoted: "shirt;hat").'
        )
    if missing:
        raise DatasetError(
            f"{path} has no {' or '.join(missing)} column. Received: columns {header}. Its first row must name "
            f"the columns {','.join(COLUMNS)} (and optionally {SPLIT_COLUMN})."
        )
    repeated = sorted({name for name in header if name and header.count(name) > 1})
    if repeated:
        raise DatasetError(f"{path} names the column(s) {repeated} twice. Received: columns {header}. Name each once.")


def _rows(path: str | Path, header: list[str], records: list[tuple[int, list[str]]]) -> list[_Row]:
    """The non-blank records as rows, every cell checked."""
    position = {name: header.index(name) for name in (*COLUMNS, SPLIT_COLUMN) if name in header}
    rows = []
    for number, record in records:
        cells = {name: record[at].strip() if at < len(record) else "" for name, at in position.items()}
        if is_blank(record):
            continue
        for name in COLUMNS:
            if not cells[name]:
                raise DatasetError(
                    f"{path} row {number} has no {name}. Received: {name}=''. Fill the cell or delete the row."
                )
        split = None
        if SPLIT_COLUMN in cells:
            split = SPLITS.get(cells[SPLIT_COLUMN].lower())
            if split is None:
                raise DatasetError(
                    f"{path} row {number} has an unknown split. Received: split={cells[SPLIT_COLUMN]!r}. Use "
                    f"{', '.join(SPLITS)} (any case), or leave the split column out and hold out --val-split."
                )
        labels = tuple(sorted({label.strip() for label in cells["label"].split(LABEL_SEPARATOR) if label.strip()}))
        if not labels:
            raise DatasetError(f"{path} row {number} has no label. Received: label={cells['label']!r}. Fill the cell.")
        rows.append(_Row(number, cells["file"], labels, split))
    if not rows:
        raise DatasetError(f"{path} has no rows below its header. Add one row per image: file,label.")
    return rows


def _check_paths(path: str | Path, images: str | Path, rows: list[_Row]) -> None:
    """Normalise each row's file; refuse paths out of `images`, files listed twice, missing and non-image files."""
    seen: dict[str, _Row] = {}
    for row in rows:
        relative = os.path.normpath(row.file)
        if PurePath(row.file).is_absolute() or relative == ".." or relative.startswith(f"..{os.sep}"):
            raise DatasetError(
                f"{path} row {row.number} names a file outside {images}. Received: file={row.file!r}. "
                f"Give paths relative to --images {images}, inside it."
            )
        if relative in seen:
            first = seen[relative]
            advice = "Keep one" if first.label == row.label else "Keep one row, with the image's right label"
            raise DatasetError(
                f"{path} lists {relative} twice, on rows {first.number} and {row.number}. "
                f"Received: label={first.label!r} and label={row.label!r}. {advice}."
            )
        seen[relative] = row
        row.file = relative
    _check_files(path, images, rows)


def _check_files(path: str | Path, images: str | Path, rows: list[_Row]) -> None:
    not_images = [row for row in rows if not is_image_file(row.file)]
    if not_images:
        raise DatasetError(
            f"{path} names {len(not_images)} file(s) that are not images: {_listing(not_images)}. "
            f"Allowed formats: {', '.join(IMAGE_EXTENSIONS)}. Remove those rows."
        )
    missing = [row for row in rows if not Path(images, row.file).is_file()]
    if missing:
        hint = f" None of them is there: is --images {images} the folder they are relative to?"
        raise DatasetError(
            f"{path} names {len(missing)} file(s) not found in {images}: {_listing(missing)}. "
            "Fix or remove those rows, or give --images the folder the paths are relative to."
            + (hint if len(missing) == len(rows) else "")
        )


def _listing(rows: list[_Row]) -> str:
    shown = ", ".join(f"row {row.number} {row.file!r}" for row in rows[:ROWS_SHOWN])
    return shown + (f" (and {len(rows) - ROWS_SHOWN} more)" if len(rows) > ROWS_SHOWN else "")
