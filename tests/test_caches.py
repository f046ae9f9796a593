from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from imgclf.caches import CACHE_KINDS, CacheError, cache_sizes, clear_caches, format_size
from imgclf.cli import main

DAY = 24 * 60 * 60


def write_entry(path: Path, size: int, age_days: float = 0.0) -> Path:
    """A cache file of `size` bytes, last written `age_days` days ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    written = time.time() - age_days * DAY
    os.utime(path, (written, written))
    return path


@pytest.fixture
def cache_tree(feature_cache_in_tmp: Path) -> Path:
    """Each kind laid out as imgclf writes it: features 3 files / 1,600 B, decoded 3 / 3,000 B, onnx 1 / 500 B."""
    root = feature_cache_in_tmp
    backbone = root / "features" / "0123456789abcdef"
    write_entry(backbone / "ab" / f"ab{'1' * 62}.safetensors", 100)
    write_entry(backbone / "backbone.onnx", 1000)
    write_entry(backbone / "openvino" / "compiled.blob", 500)
    decode = root / "decoded" / "fedcba9876543210"
    write_entry(decode / "cd" / f"cd{'2' * 62}.pixels", 1000)
    write_entry(decode / "cd" / f"cd{'3' * 62}.pixels", 1000)
    write_entry(decode / "ef" / f"ef{'4' * 62}.pixels", 1000)
    write_entry(root / "onnx" / ("5" * 32) / "model.onnx", 500)
    return root


def sizes_by_kind() -> dict[str, tuple[int, int]]:
    return {size.kind: (size.files, size.size_bytes) for size in cache_sizes()}


def files_in(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if not path.is_dir())


def test_sizes_count_the_files_and_bytes_of_each_kind(cache_tree):
    assert sizes_by_kind() == {"features": (3, 1600), "decoded": (3, 3000), "onnx": (1, 500)}
    assert [size.folder for size in cache_sizes()] == [cache_tree / kind for kind in CACHE_KINDS]


def test_missing_cache_folders_hold_nothing(feature_cache_in_tmp):
    assert sizes_by_kind() == {"features": (0, 0), "decoded": (0, 0), "onnx": (0, 0)}
    assert not any(feature_cache_in_tmp.iterdir()), "reading the sizes must not create folders"


def test_clearing_one_kind_leaves_the_others(cache_tree):
    [freed] = clear_caches("decoded")
    assert (freed.kind, freed.files, freed.size_bytes) == ("decoded", 3, 3000)
    assert sizes_by_kind() == {"features": (3, 1600), "decoded": (0, 0), "onnx": (1, 500)}
    assert list((cache_tree / "decoded").iterdir()) == [], "the emptied key and prefix folders go too"


def test_clearing_all_empties_every_kind(cache_tree):
    freed = clear_caches("all")
    assert [(size.kind, size.files, size.size_bytes) for size in freed] == [
        ("features", 3, 1600),
        ("decoded", 3, 3000),
        ("onnx", 1, 500),
    ]
    assert sizes_by_kind() == {"features": (0, 0), "decoded": (0, 0), "onnx": (0, 0)}


def test_older_than_deletes_only_old_files_and_the_folders_they_leave_empty(cache_tree):
    decode = cache_tree / "decoded" / "fedcba9876543210"
    old = write_entry(decode / "cd" / f"cd{'2' * 62}.pixels", 1000, age_days=40)
    write_entry(decode / "ef" / f"ef{'4' * 62}.pixels", 1000, age_days=31)
    write_entry(cache_tree / "features" / "0123456789abcdef" / "backbone.onnx", 1000, age_days=29)

    freed = clear_caches("all", older_than_days=30)

    assert [(size.kind, size.files, size.size_bytes) for size in freed] == [
        ("features", 0, 0),
        ("decoded", 2, 2000),
        ("onnx", 0, 0),
    ]
    assert not old.exists()
    assert not (decode / "ef").exists(), "a prefix folder left empty is removed"
    assert files_in(decode) == [decode / "cd" / f"cd{'3' * 62}.pixels"]
    assert sizes_by_kind() == {"features": (3, 1600), "decoded": (1, 1000), "onnx": (1, 500)}


def test_clearing_never_follows_a_symbolic_link_out_of_the_cache(cache_tree, tmp_path):
    outside = tmp_path / "photos"
    kept_file = write_entry(outside / "holiday.jpg", 700)
    kept_folder_file = write_entry(outside / "album" / "beach.jpg", 800)
    decoded = cache_tree / "decoded"
    (decoded / "file-link").symlink_to(kept_file)
    (decoded / "fedcba9876543210" / "folder-link").symlink_to(outside / "album", target_is_directory=True)

    clear_caches("decoded")

    assert kept_file.read_bytes() == b"x" * 700
    assert kept_folder_file.read_bytes() == b"x" * 800
    assert list(decoded.iterdir()) == [], "the links themselves are deleted"


def swap_once_listed(monkeypatch, victim: Path, swap: Callable[[Path], None]) -> None:
    """Run `swap(victim)` right after the folder holding `victim` is listed, before clearing reaches the entry:
    what another process could do while `imgclf cache --clear` runs."""
    real_scandir = os.scandir
    swapped = []

    def listing_then_swap(folder):
        entries = list(real_scandir(folder))
        if not swapped and any(entry.name == victim.name for entry in entries):
            swap(victim)
            swapped.append(victim)
        return entries

    monkeypatch.setattr(os, "scandir", listing_then_swap)


def folder_for_link(folder: Path, target: Path) -> None:
    folder.rename(folder.with_name("moved-away"))
    folder.symlink_to(target, target_is_directory=True)


def file_for_folder(file: Path, _: Path) -> None:
    file.unlink()
    write_entry(file / "inner.pixels", 10)


@pytest.mark.parametrize("swap", [folder_for_link, file_for_folder])
def test_an_entry_swapped_while_clearing_is_skipped_and_nothing_outside_is_deleted(
    cache_tree, tmp_path, monkeypatch, swap
):
    outside = tmp_path / "photos"
    kept = write_entry(outside / "holiday.jpg", 700)
    decode = cache_tree / "decoded" / "fedcba9876543210"
    victim = decode / "cd" if swap is folder_for_link else decode / "ef" / f"ef{'4' * 62}.pixels"
    swap_once_listed(monkeypatch, victim, lambda path: swap(path, outside))

    clear_caches("decoded")

    assert kept.read_bytes() == b"x" * 700, "nothing outside the cache is deleted"
    assert victim.is_symlink() or victim.is_dir(), "the swapped entry is left as it is"


def test_a_kind_folder_that_is_a_symbolic_link_is_refused(feature_cache_in_tmp, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    entry = write_entry(elsewhere / "ab" / "entry.pixels", 100)
    (feature_cache_in_tmp / "decoded").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(CacheError, match="symbolic link"):
        clear_caches("all")
    assert entry.exists()


@pytest.mark.parametrize("where", ["home", "above home", "filesystem root", "~"])
def test_a_dangerous_cache_root_is_refused(where, tmp_path, monkeypatch):
    home = tmp_path / "users" / "me"
    entry = write_entry(home / "decoded" / "notes.txt", 10, age_days=100)
    monkeypatch.setenv("HOME", str(home))
    root = {"home": home, "above home": home.parent, "filesystem root": Path("/"), "~": "~"}[where]
    monkeypatch.setenv("IMGCLF_CACHE", str(root))
    with pytest.raises(CacheError, match="Refusing to clear caches") as error:
        clear_caches("decoded", older_than_days=30)
    assert "IMGCLF_CACHE" in str(error.value)
    assert entry.exists()


def test_a_cache_root_inside_home_is_allowed(tmp_path, monkeypatch):
    home = tmp_path / "me"
    entry = write_entry(home / ".cache" / "imgclf" / "onnx" / "abc" / "model.onnx", 10)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("IMGCLF_CACHE")
    assert [size.files for size in clear_caches("onnx")] == [1]
    assert not entry.exists()


@pytest.mark.parametrize(
    ("kind", "days", "message"),
    [
        ("pixels", None, "Unknown cache kind 'pixels'"),
        ("all", -1.0, "--older-than=-1.0"),
        ("all", math.nan, "--older-than=nan"),
        ("decoded", math.inf, "--older-than=inf"),
    ],
)
def test_bad_input_is_a_cache_error_that_names_the_option(cache_tree, kind, days, message):
    with pytest.raises(CacheError, match=message):
        clear_caches(kind, older_than_days=days)
    assert sizes_by_kind()["decoded"] == (3, 3000), "nothing is deleted before the input is checked"


@pytest.mark.parametrize(
    ("size_bytes", "shown"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KB"), (150_528, "147.0 KB"), (1_288_490_189, "1.2 GB")],
)
def test_format_size(size_bytes, shown):
    assert format_size(size_bytes) == shown


def test_cli_prints_a_table_of_the_caches_with_a_total(cache_tree, capsys):
    assert main(["cache"]) == 0
    rows = {line.split()[1]: line for line in capsys.readouterr().out.splitlines() if line.startswith("│ ")}
    assert "1.6 KB" in rows["features"] and " 3 " in rows["features"]
    assert "2.9 KB" in rows["decoded"]
    assert "500 B" in rows["onnx"] and " 1 " in rows["onnx"]
    assert "5.0 KB" in rows["total"] and " 7 " in rows["total"]


def test_cli_clears_one_kind_and_says_what_was_freed(cache_tree, capsys):
    assert main(["cache", "--clear", "decoded"]) == 0
    assert "Freed 2.9 KB (3 files)." in capsys.readouterr().out
    assert files_in(cache_tree / "decoded") == []
    assert len(files_in(cache_tree / "features")) == 3


def test_cli_clear_older_than(cache_tree, capsys):
    write_entry(cache_tree / "onnx" / ("5" * 32) / "model.onnx", 500, age_days=10)
    assert main(["cache", "--clear", "all", "--older-than", "7"]) == 0
    printed = capsys.readouterr().out
    assert "written more than 7 days ago" in printed
    assert "Freed 500 B (1 file)." in printed
    assert sizes_by_kind() == {"features": (3, 1600), "decoded": (3, 3000), "onnx": (0, 0)}


def test_cli_older_than_without_clear_is_a_one_line_error(cache_tree, capsys):
    assert main(["cache", "--older-than", "30"]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        "error: --older-than only limits --clear. Received: --older-than=30 without --clear. "
        "Add --clear KIND, e.g. imgclf cache --clear all --older-than 30."
    ]
    assert sizes_by_kind()["decoded"] == (3, 3000)


def test_cli_negative_age_is_a_user_error(cache_tree, capsys):
    assert main(["cache", "--clear", "decoded", "--older-than", "-2"]) == 1
    assert "Invalid option --older-than" in capsys.readouterr().err
    assert sizes_by_kind()["decoded"] == (3, 3000)


def test_cli_unknown_kind_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["cache", "--clear", "pixels"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'pixels'" in capsys.readouterr().err
