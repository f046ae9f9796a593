"""Applying label-issues.csv to a copy of real photos: relabel, remove, keep, the journal, undo, clashes, bad rows,
interrupted fixes, and the `imgclf fix` command."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from imgclf.cli import main
from imgclf.data import journal as journal_module
from imgclf.data.fixes import ISSUE_COLUMNS, apply_fixes, plan_fixes, quarantine_folder
from imgclf.data.folders import index_folder
from imgclf.data.journal import FixError, read_journal, undo_moves


def snapshot(root: Path) -> tuple[dict[str, str], list[str]]:
    """Every file under `root` by relative path with the SHA-256 of its bytes, and every folder."""
    entries = sorted(root.rglob("*"))
    files = {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in entries if p.is_file()}
    return files, [str(p.relative_to(root)) for p in entries if p.is_dir()]


def photo(data: Path, class_name: str, number: int) -> str:
    """The `number`-th photo of a class folder, as a row names it: `class/file`."""
    return f"{class_name}/{sorted(os.listdir(data / class_name))[number]}"


def write_issues(path: Path, rows: list[tuple[str, ...]]) -> Path:
    lines = [",".join(ISSUE_COLUMNS)] + [",".join(row) for row in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def data(small_photos: Path) -> Path:
    """small_photos/train: 8 real cars and 8 real planes."""
    return small_photos / "train"


@pytest.fixture
def issues(tmp_path: Path, data: Path) -> Path:
    """A relabel, a remove and a keep row, in an audit folder outside the photos."""
    rows = [
        (photo(data, "cars", 0), "cars", "planes", "0.97", "relabel"),
        (photo(data, "planes", 1), "planes", "cars", "0.88", "remove"),
        (photo(data, "planes", 2), "planes", "cars", "0.41", "keep"),
    ]
    return write_issues(tmp_path / "audit" / "label-issues.csv", rows)


def test_relabel_remove_and_keep_move_only_what_they_say(tmp_path, data, issues):
    relabelled, removed, kept = (data / photo(data, *args) for args in (("cars", 0), ("planes", 1), ("planes", 2)))
    contents = {path: path.read_bytes() for path in (relabelled, removed, kept)}
    plan = plan_fixes(issues, data)
    assert (len(plan.moves), plan.kept) == (2, 1)
    apply_fixes(plan, tmp_path / "audit" / "journal.jsonl", issues)

    assert (data / "planes" / relabelled.name).read_bytes() == contents[relabelled] and not relabelled.exists()
    quarantined = quarantine_folder(data) / "planes" / removed.name
    assert quarantined.read_bytes() == contents[removed] and not removed.exists()
    assert quarantine_folder(data) == data.parent / "train.quarantine"  # beside DATA, never inside it
    assert kept.read_bytes() == contents[kept]
    index = index_folder(data)
    assert index.class_counts() == [7, 8] and str(quarantined) not in index.files


def test_the_journal_records_each_move_before_and_after_it(tmp_path, data, issues):
    journal = apply_fixes(plan_fixes(issues, data), tmp_path / "audit" / "journal.jsonl", issues)
    entries = [json.loads(line) for line in journal.read_text().splitlines()]
    assert entries[0]["journal"] == "imgclf-fix/1" and entries[0]["data"] == str(data)
    assert entries[0]["issues"] == str(issues)
    moves = [entry for entry in entries if "move" in entry]
    assert [(move["row"], move["action"]) for move in moves] == [(2, "relabel"), (3, "remove")]
    for move in moves:
        assert entries.index(move) < entries.index({"moved": move["move"]})
    folders = [entry["folder"] for entry in entries if "folder" in entry]
    assert folders == [str(quarantine_folder(data)), str(quarantine_folder(data) / "planes")]


def test_undo_restores_a_byte_identical_tree_and_can_run_again(tmp_path, small_photos, data, issues):
    before = snapshot(small_photos)
    journal = apply_fixes(plan_fixes(issues, data), tmp_path / "audit" / "journal.jsonl")
    assert snapshot(small_photos) != before
    steps = undo_moves(journal)
    assert [step.kind for step in steps] == ["put back", "put back"]
    assert snapshot(small_photos) == before  # the quarantine folder it made is gone too
    assert undo_moves(journal) == []
    assert snapshot(small_photos) == before


def test_a_taken_name_gets_a_suffix_and_nothing_is_overwritten(tmp_path, small_photos, data):
    car = photo(data, "cars", 3)
    (data / "planes" / Path(car).name).write_bytes(b"a plane photo that happens to share the name")
    (data / "cars" / "odd.jpg").write_bytes((data / car).read_bytes())
    rows = [(car, "cars", "planes", "0.9", "relabel"), ("cars/odd.jpg", "cars", "planes", "0.9", "relabel")]
    before = snapshot(small_photos)
    plan = plan_fixes(write_issues(tmp_path / "issues.csv", rows), data)
    stem = Path(car).stem
    assert [move.destination.name for move in plan.moves] == [f"{stem}-1.jpg", "odd.jpg"]
    journal = apply_fixes(plan, tmp_path / "journal.jsonl")
    assert (data / "planes" / Path(car).name).read_bytes() == b"a plane photo that happens to share the name"
    undo_moves(journal)
    assert snapshot(small_photos) == before


def test_two_rows_bound_for_one_name_both_arrive(tmp_path, data):
    car = photo(data, "cars", 0)
    (data / "trucks").mkdir()
    (data / "trucks" / Path(car).name).write_bytes(b"a truck photo with the car's file name")
    rows = [(car, "cars", "planes", "0.9", "relabel"), (f"trucks/{Path(car).name}", "trucks", "planes", "1", "relabel")]
    plan = plan_fixes(write_issues(tmp_path / "issues.csv", rows), data)
    assert [move.destination.name for move in plan.moves] == [Path(car).name, f"{Path(car).stem}-1.jpg"]


def bad_rows(data: Path, first: str) -> list[tuple[tuple[str, ...], str]]:
    """Rows that must be refused, each with what the error says; `first` is the file of the row before them."""
    car = photo(data, "cars", 0)
    val_car = photo(data.parent / "val", "cars", 0)
    return [
        ((car, "cars", "planes", "0.9", "delete"), "unknown action. Received: action='delete'"),
        (("cars/no-such-photo.jpg", "cars", "planes", "0.9", "relabel"), "the file does not exist"),
        ((str(data.parent / "val" / val_car), "cars", "planes", "1", "remove"), "outside the data root"),
        ((f"cars/../../val/{val_car}", "cars", "planes", "1", "remove"), "climbs out with '..'"),
        ((car, "cars", "planes/jets", "0.9", "relabel"), "suggested is not a class folder name"),
        ((car, "cars/../cars", "planes", "0.9", "relabel"), "given is not a class folder name"),
        ((car, "cars", "trucks", "0.9", "relabel"), "has no class folder 'trucks'"),
        ((car, "planes", "cars", "0.9", "relabel"), "not in the class folder 'planes'"),
        ((car, "cars", "cars", "0.9", "relabel"), "already has"),
        ((first, "planes", "cars", "0.9", "keep"), "the file is also in row 2"),
    ]


@pytest.mark.parametrize("case", range(10))
def test_a_bad_row_is_named_in_one_line_and_nothing_moves(tmp_path, small_photos, data, case):
    first = photo(data, "planes", 0)
    row, message = bad_rows(data, first)[case]
    issues = write_issues(tmp_path / "issues.csv", [(first, "planes", "cars", "1", "remove"), row])
    before = snapshot(small_photos)
    with pytest.raises(FixError) as caught:
        plan_fixes(issues, data)
    assert f"{issues} row 3: " in str(caught.value) and message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert snapshot(small_photos) == before


def test_a_file_with_other_columns_is_refused(tmp_path, data):
    issues = tmp_path / "issues.csv"
    issues.write_text("path,label\ncars/a.jpg,planes\n")
    with pytest.raises(FixError, match="has the columns path,label; expected file,given,suggested,score,action"):
        plan_fixes(issues, data)


def test_a_new_class_needs_the_flag_and_goes_away_on_undo(tmp_path, small_photos, data):
    issues = write_issues(tmp_path / "issues.csv", [(photo(data, "cars", 0), "cars", "trucks", "0.9", "relabel")])
    with pytest.raises(FixError, match="--create-classes"):
        plan_fixes(issues, data)
    before = snapshot(small_photos)
    plan = plan_fixes(issues, data, create_classes=True)
    assert plan.new_classes == ["trucks"]
    journal = apply_fixes(plan, tmp_path / "journal.jsonl")
    assert index_folder(data).class_names == ["cars", "planes", "trucks"]
    undo_moves(journal)
    assert snapshot(small_photos) == before


def test_sub_folders_below_the_class_are_kept_and_undo_removes_the_new_ones(tmp_path, small_photos, data):
    street = data / "cars" / "street"
    street.mkdir()
    (data / photo(data, "cars", 0)).rename(street / "parked.jpg")
    before = snapshot(small_photos)
    issues = write_issues(tmp_path / "issues.csv", [("cars/street/parked.jpg", "cars", "planes", "0.9", "relabel")])
    journal = apply_fixes(plan_fixes(issues, data), tmp_path / "journal.jsonl")
    assert (data / "planes" / "street" / "parked.jpg").is_file() and list(street.iterdir()) == []
    undo_moves(journal)
    assert snapshot(small_photos) == before


def many_rows(data: Path) -> list[tuple[str, ...]]:
    cars = [(photo(data, "cars", n), "cars", "planes", "0.9", "relabel") for n in range(3)]
    return cars + [(photo(data, "planes", n), "planes", "cars", "0.9", "remove") for n in range(3)]


def break_move(monkeypatch: pytest.MonkeyPatch, number: int, failure: Callable[[Path, Path], None]) -> None:
    """Make the `number`-th move of the next fix call `failure(source, destination)`, which raises, instead."""
    real_move, calls = journal_module.move_without_overwrite, []

    def move(source: Path, destination: Path) -> None:
        calls.append(source)
        if len(calls) == number:
            failure(source, destination)
        real_move(source, destination)

    monkeypatch.setattr(journal_module, "move_without_overwrite", move)


def test_a_fix_that_fails_midway_is_undone_cleanly(tmp_path, small_photos, data, monkeypatch):
    plan = plan_fixes(write_issues(tmp_path / "issues.csv", many_rows(data)), data)
    before = snapshot(small_photos)

    def disk_error(source: Path, destination: Path) -> None:
        raise OSError(errno.EIO, "Input/output error", str(source))

    break_move(monkeypatch, 4, disk_error)
    with pytest.raises(OSError, match="Input/output error"):
        apply_fixes(plan, tmp_path / "journal.jsonl")
    monkeypatch.undo()
    record = read_journal(tmp_path / "journal.jsonl")
    assert sorted(record.moves) == [1, 2, 3, 4]  # the fourth was journaled before it failed
    assert [step.kind for step in undo_moves(tmp_path / "journal.jsonl")] == ["put back"] * 3
    assert snapshot(small_photos) == before


def test_a_fix_stopped_between_linking_and_unlinking_is_undone_cleanly(tmp_path, small_photos, data, monkeypatch):
    plan = plan_fixes(write_issues(tmp_path / "issues.csv", many_rows(data)), data)
    before = snapshot(small_photos)

    def stopped_after_the_link(source: Path, destination: Path) -> None:
        os.link(source, destination)  # the new name exists, the old one is not yet removed
        raise KeyboardInterrupt

    break_move(monkeypatch, 5, stopped_after_the_link)
    with pytest.raises(KeyboardInterrupt):
        apply_fixes(plan, tmp_path / "journal.jsonl")
    monkeypatch.undo()
    with (tmp_path / "journal.jsonl").open("a") as journal:
        journal.write('{"moved": 5')  # and a line the crash cut short
    steps = undo_moves(tmp_path / "journal.jsonl")
    assert [step.kind for step in steps] == ["drop"] + ["put back"] * 4
    assert snapshot(small_photos) == before


def test_moves_across_file_systems_copy_then_remove(tmp_path, small_photos, data, issues, monkeypatch):
    def no_links(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    before = snapshot(small_photos)
    journal = apply_fixes(plan_fixes(issues, data), tmp_path / "journal.jsonl")
    assert len(snapshot(small_photos)[0]) == len(before[0])
    undo_moves(journal)
    assert snapshot(small_photos) == before


def test_undo_refuses_when_a_file_took_the_place_and_moves_nothing(tmp_path, small_photos, data, issues):
    relabelled = data / photo(data, "cars", 0)
    journal = apply_fixes(plan_fixes(issues, data), tmp_path / "journal.jsonl")
    relabelled.write_bytes(b"a new photo saved under the old name")
    after_fix = snapshot(small_photos)
    with pytest.raises(FixError) as caught:
        undo_moves(journal)
    assert f"Cannot undo the move of {relabelled} to " in str(caught.value) and "\n" not in str(caught.value)
    assert snapshot(small_photos) == after_fix


def test_the_command_prints_the_plan_fixes_and_undoes(tmp_path, small_photos, data, issues, capsys):
    before = snapshot(small_photos)
    assert main(["fix", str(issues), "--data", str(data), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "relabel" in printed and "remove" in printed and "nothing moved (dry run)" in printed
    assert snapshot(small_photos) == before
    assert main(["fix", str(issues), "--data", str(data)]) == 0
    journal = next((tmp_path / "audit").glob("label-issues.fix-*.jsonl"))
    assert f"imgclf fix --undo {journal}" in capsys.readouterr().out
    assert main(["fix", "--undo", str(journal)]) == 0
    assert snapshot(small_photos) == before


def test_rows_are_numbered_as_a_spreadsheet_shows_them(tmp_path, data):
    car = photo(data, "cars", 0)
    issues = tmp_path / "issues.csv"
    # Row 2's score cell holds a line break: the bad row is the file's 4th line but the spreadsheet's row 3.
    issues.write_text(f'{",".join(ISSUE_COLUMNS)}\n{car},cars,planes,"0.9\nchecked",keep\n{car},cars,planes,1,rename\n')
    with pytest.raises(FixError, match=f"{issues} row 3: unknown action"):
        plan_fixes(issues, data)


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (
            b"file,given,suggested,score,action\ncars/caf\xe9.jpg,cars,planes,0.9,keep\n",
            "row 2 is not UTF-8 text (byte 0xe9)",
        ),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "row 1 is not UTF-8 text (byte 0x89)"),
    ],
    ids=["latin-1", "binary"],
)
def test_the_command_names_an_issues_file_that_is_not_utf8_and_exits_1(tmp_path, data, capsys, content, line):
    issues = tmp_path / "issues.csv"
    issues.write_bytes(content)
    before = snapshot(data)
    assert main(["fix", str(issues), "--data", str(data)]) == 1
    error = capsys.readouterr().err
    assert f"{issues} {line}" in " ".join(error.split()) and len(error.strip().splitlines()) == 1
    assert snapshot(data) == before


def test_the_command_names_a_bad_row_and_exits_1(tmp_path, data, capsys):
    issues = write_issues(tmp_path / "issues.csv", [(photo(data, "cars", 0), "cars", "planes", "1", "rename")])
    assert main(["fix", str(issues), "--data", str(data)]) == 1
    error = capsys.readouterr().err
    assert "row 2: unknown action" in error and len(error.strip().splitlines()) == 1
