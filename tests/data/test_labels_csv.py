"""Reading a labels CSV: the index it gives, and one-line errors that name the row as a spreadsheet shows it."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from tests.conftest import label_wide_photos, write_rows

from imgclf.data.folders import DatasetError, label_set
from imgclf.data.labels_csv import file_facts, read_labels


def rows_of(folder: Path) -> list[list[str]]:
    with (folder / "labels.csv").open(newline="") as file:
        return list(csv.reader(file))


def test_a_csv_gives_sorted_classes_files_and_splits(flat_photos):
    table = read_labels(flat_photos / "labels.csv", flat_photos)

    assert table.index.class_names == ["cars", "planes"]
    assert table.index.class_counts() == [11, 11]
    assert table.index.files == sorted(table.index.files)  # cars first, then planes, each sorted
    assert all(Path(file).parent == flat_photos and Path(file).is_file() for file in table.index.files)
    assert len(table.part("train").files) == 16 and table.part("val").class_counts() == [3, 3]
    assert table.index.root == str(flat_photos / "labels.csv")


def test_without_a_split_column_every_row_is_a_training_row(flat_photos):
    write_rows(flat_photos / "labels.csv", [tuple(row[:2]) for row in rows_of(flat_photos)])

    table = read_labels(flat_photos / "labels.csv", flat_photos)

    assert table.splits is None and len(table.part("train").files) == 22


def test_columns_are_found_by_name_in_any_order_case_and_blank_rows_are_passed_over(flat_photos):
    rows = rows_of(flat_photos)
    shuffled = [(" Label", "notes", "FILE ")] + [(label, "x", file) for file, label, _ in rows[1:]] + [("", "", "")]
    write_rows(flat_photos / "labels.csv", shuffled[:3] + [("", "", "")] + shuffled[3:])

    table = read_labels(flat_photos / "labels.csv", flat_photos)

    assert len(table.index.files) == 22 and table.splits is None


def test_an_excel_csv_with_a_byte_order_mark_is_read(flat_photos):
    path = flat_photos / "labels.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())

    assert len(read_labels(path, flat_photos).index.files) == 22


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (("cars/../../x.jpg", "cars", "train"), "row 24 names a file outside"),
        (("/etc/hosts.jpg", "cars", "train"), "row 24 names a file outside"),
        (("", "cars", "train"), "row 24 has no file. Received: file=''"),
        (("car_x.jpg", "", "train"), "row 24 has no label"),
        (("car_x.jpg", "cars", "holdout"), "row 24 has an unknown split. Received: split='holdout'"),
        (("missing.jpg", "cars", "train"), r"names 1 file\(s\) not found in .*: row 24 'missing.jpg'"),
        (("notes.txt", "cars", "train"), r"names 1 file\(s\) that are not images: row 24 'notes.txt'"),
    ],
)
def test_a_bad_row_is_one_line_naming_its_spreadsheet_row(flat_photos, row, message):
    (flat_photos / "notes.txt").write_text("not a photo")
    rows = rows_of(flat_photos)  # the header is row 1, so the 22 photos are rows 2 to 23
    write_rows(flat_photos / "labels.csv", [*map(tuple, rows), row])

    with pytest.raises(DatasetError, match=message) as raised:
        read_labels(flat_photos / "labels.csv", flat_photos)
    assert "\n" not in str(raised.value)


def test_a_file_listed_twice_names_both_rows_and_both_labels(flat_photos):
    rows = rows_of(flat_photos)
    write_rows(flat_photos / "labels.csv", [*map(tuple, rows), (rows[2][0], "planes", "train")])

    with pytest.raises(DatasetError, match=r"twice, on rows 3 and 24. Received: label='cars' and label='planes'"):
        read_labels(flat_photos / "labels.csv", flat_photos)


def test_a_wrong_images_folder_is_named_when_no_file_is_found(flat_photos, tmp_path):
    with pytest.raises(DatasetError, match="names 22 file.* None of them is there: is --images"):
        read_labels(flat_photos / "labels.csv", tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"path,label\na.jpg,cars\n", r"has no file column. Received: columns \['path', 'label'\]"),
        (b"file;label\na.jpg;cars\n", "row 1 is separated by semicolons"),
        (b"file,label\ncar.jpg,caf\xe9\n", r"row 2 is not UTF-8 text \(byte 0xe9\)"),
        (b"", "is empty"),
        (b"file,label\n\n", "has no rows below its header"),
        (b"file,label,file\n", r"names the column\(s\) \['file'\] twice"),
    ],
)
def test_a_csv_that_cannot_be_read_is_one_line(tmp_path, content, message):
    (tmp_path / "labels.csv").write_bytes(content)

    with pytest.raises(DatasetError, match=message):
        read_labels(tmp_path / "labels.csv", tmp_path)


def test_a_byte_that_is_not_utf8_is_placed_on_the_spreadsheets_row(tmp_path):
    # Row 2's cell holds a line break, so the bad byte is on the file's 4th line but the spreadsheet's row 3.
    (tmp_path / "labels.csv").write_bytes(b'file,label\n"a\nb.jpg",cars\ncar.jpg,caf\xe9\n')

    with pytest.raises(DatasetError, match=r"labels.csv row 3 is not UTF-8 text \(byte 0xe9\)"):
        read_labels(tmp_path / "labels.csv", tmp_path)


def test_a_missing_csv_names_the_option(tmp_path):
    with pytest.raises(DatasetError, match=r"does not exist or is not a file. Received: --labels="):
        read_labels(tmp_path / "nope.csv", tmp_path)


def test_one_class_is_refused(flat_photos):
    write_rows(flat_photos / "labels.csv", [tuple(row) for row in rows_of(flat_photos) if row[1] != "planes"])

    with pytest.raises(DatasetError, match=r"names one class only. Received: label=\['cars'\]"):
        read_labels(flat_photos / "labels.csv", flat_photos)


def test_file_facts_count_the_rows_and_hash_the_bytes(flat_photos):
    facts = file_facts(flat_photos / "labels.csv")
    with (flat_photos / "labels.csv").open("a") as file:
        file.write("\n")  # a blank row: the same rows, other bytes

    assert facts["labels_rows"] == 22 and len(facts["labels_sha256"]) == 64
    assert file_facts(flat_photos / "labels.csv")["labels_sha256"] != facts["labels_sha256"]


def test_file_facts_of_a_csv_that_is_not_utf8_is_one_line(flat_photos):
    # A resumed run reads its CSV's facts to say whether it changed: it may have been saved again as Latin-1.
    (flat_photos / "labels.csv").write_bytes(b"file,label\ncar.jpg,caf\xe9\n")

    with pytest.raises(DatasetError, match=r"row 2 is not UTF-8 text \(byte 0xe9\)"):
        file_facts(flat_photos / "labels.csv")


def test_a_cell_of_several_labels_makes_the_table_multi_label(flat_photos):
    table = read_labels(label_wide_photos(flat_photos), flat_photos)

    index = table.index
    assert index.multi_label and index.class_names == ["cars", "planes", "wide"]
    wide = [Path(file).name for file, label in zip(index.files, index.labels) if 2 in label_set(label)]
    assert 0 < len(wide) < 22 and all(label_set(label)[0] in (0, 1) for label in index.labels)
    assert index.class_counts() == [11, 11, len(wide)]
    assert table.part("val").multi_label and table.part("val").class_counts()[:2] == [3, 3]


def test_multi_label_reads_single_labels_as_sets_and_takes_two_labels(flat_photos):
    multi = label_wide_photos(flat_photos)
    multi.write_text(multi.read_text().replace("cars;wide", "wide").replace("planes;wide", "wide"))

    assert not read_labels(multi, flat_photos).index.multi_label
    table = read_labels(multi, flat_photos, multi_label=True)
    assert table.index.multi_label and set(table.index.labels) == {0b001, 0b010, 0b100}  # bit masks, not indices
    two = read_labels(flat_photos / "labels.csv", flat_photos, multi_label=True).index
    assert two.multi_label and two.class_names == ["cars", "planes"] and set(two.labels) == {0b01, 0b10}
