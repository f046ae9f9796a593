"""The CSV files people edit in a spreadsheet (a labels CSV, an audit's label-issues.csv), read as UTF-8 text.

A spreadsheet shows one row per CSV record, the header as row 1, even when a quoted cell holds a line break;
every error names a row that way, so that it is the row the user finds.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from imgclf.config import ImgclfError


def read_csv_rows(data: bytes, path: str | Path, error: type[ImgclfError]) -> list[list[str]]:
    """The records of the CSV file `path`, whose bytes are `data`, header first: `rows[i]` is the spreadsheet's
    row i + 1. A byte-order mark (spreadsheets save one) is dropped.

    Raises `error` in one line naming `path` and the row when the bytes are not UTF-8 text or not CSV.

    >>> read_csv_rows(b"file,label\\ncar.jpg,cars\\n", "labels.csv", DatasetError)
    [['file', 'label'], ['car.jpg', 'cars']]
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as failure:
        row = _row_at(data[: failure.start].decode("utf-8-sig"))
        raise error(
            f"{path} row {row} is not UTF-8 text (byte 0x{data[failure.start]:02x}). "
            "Save it as 'CSV UTF-8' (Excel, LibreOffice) or UTF-8 text."
        ) from None
    rows: list[list[str]] = []
    try:
        rows.extend(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as failure:
        raise error(
            f"{path} row {len(rows) + 1} cannot be read as CSV: {failure}. Fix that row (a quote left open?)."
        ) from None
    return rows


def _row_at(text_before: str) -> int:
    """The spreadsheet row of the character that follows `text_before`."""
    return len(list(csv.reader(io.StringIO(text_before + "?", newline=""))))


def is_blank(row: list[str]) -> bool:
    """Whether a CSV row holds nothing but spaces (a spreadsheet's empty row); readers pass over these."""
    return not any(cell.strip() for cell in row)
