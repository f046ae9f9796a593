"""`imgclf --help`, every command's `--help` and a usage error answer without importing the heavy libraries."""

from __future__ import annotations

import subprocess
import sys

import pytest

import imgclf

HEAVY = ("torch", "torchvision", "timm", "onnxruntime", "openvino", "fastapi", "matplotlib", "sklearn")
COMMANDS = (
    "train",
    "predict",
    "evaluate",
    "report",
    "export",
    "summary",
    "demo",
    "serve",
    "audit",
    "fix",
    "explain",
    "cache",
    "runs",
    "studio",
)


def imported_heavy(*argv: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run `python -X importtime -m imgclf ARGV`; the heavy packages it imported, by importtime's own listing."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "imgclf", *argv], capture_output=True, text=True, timeout=120
    )
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
    }
    return result, sorted({name.split(".")[0] for name in imported} & set(HEAVY))


def test_help_imports_nothing_heavy():
    result, heavy = imported_heavy("--help")
    assert result.returncode == 0 and "usage: imgclf" in result.stdout
    assert heavy == []


@pytest.mark.parametrize("command", COMMANDS)
def test_every_commands_help_imports_nothing_heavy(command):
    result, heavy = imported_heavy(command, "--help")
    assert result.returncode == 0 and f"usage: imgclf {command}" in result.stdout
    assert heavy == []


def test_a_usage_error_imports_nothing_heavy():
    result, heavy = imported_heavy("train", "data", "--epochs", "many")
    assert result.returncode == 2 and "--epochs" in result.stderr
    assert heavy == []


def test_listing_and_comparing_runs_imports_nothing_heavy(trained_run):
    folder = trained_run.run_dir.parent
    result, heavy = imported_heavy("runs", str(folder))
    assert result.returncode == 0 and trained_run.run_dir.name in result.stdout
    assert heavy == []
    result, heavy = imported_heavy("runs", str(folder), "--compare", trained_run.run_dir.name, str(trained_run.run_dir))
    assert result.returncode == 0 and "macro F1" in result.stdout
    assert heavy == []


def test_the_help_tests_cover_every_command():
    from imgclf.cli.commands import COMMANDS as REGISTERED

    assert sorted(COMMANDS) == sorted(REGISTERED)


def heavy_after(code: str) -> list[str]:
    """The heavy packages in `sys.modules` after a fresh interpreter runs `code`."""
    probe = f"import sys\n{code}\nprint(*sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()


def test_importing_the_package_and_its_command_line_is_cheap():
    assert heavy_after("import imgclf, imgclf.cli, imgclf.cli.parser") == []


def test_a_public_name_imports_its_own_module_only():
    assert heavy_after("from imgclf import ImgclfError, TrainConfig") == []
    assert "torch" in heavy_after("from imgclf import Run")


def test_every_public_name_resolves():
    assert [name for name in imgclf.__all__ if getattr(imgclf, name).__name__ != name] == []
    assert set(imgclf.__all__) <= set(dir(imgclf))
    with pytest.raises(AttributeError, match="no_such_name"):
        imgclf.no_such_name  # noqa: B018
