"""The documentation site builds without a warning, and what it shows is true of the code.

Every `imgclf ...` line of a ```bash block in docs/ and README.md parses with imgclf's own parser; the API
reference documents every public name, and every public name has a docstring.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mkdocs.commands.build import build
from mkdocs.config import load_config
from mkdocs.exceptions import Abort

import imgclf

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
COMMANDS = (
    "train",
    "predict",
    "evaluate",
    "report",
    "explain",
    "export",
    "serve",
    "audit",
    "fix",
    "summary",
    "cache",
    "demo",
    "runs",
    "studio",
)


def parse_command_line(argv: list[str]) -> None:
    """Parse `imgclf ARGV` with the CLI's own parser, running nothing; AssertionError on a usage error.

    The one place these tests touch the CLI's internals: adapt it when the parser moves.
    """
    from imgclf.cli.parser import build_parser

    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed), contextlib.redirect_stdout(printed):
            build_parser()[0].parse_args(argv)
    except SystemExit as exit_info:
        if exit_info.code != 0:  # 0: --help or --version
            raise AssertionError(printed.getvalue().strip().splitlines()[-1]) from None


def bash_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) of each command in the ```bash blocks of `path`, continuation lines joined."""
    lines, in_bash, pending = [], False, ""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith("```"):
            in_bash = line.strip() == "```bash"
            continue
        if not in_bash:
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        lines.append((number, pending + line))
        pending = ""
    return lines


def imgclf_argv(line: str) -> list[str] | None:
    """The arguments after `imgclf` (or `python -m imgclf`, `torchrun ... -m imgclf`) in a shell line, else None."""
    words = shlex.split(line, comments=True)
    if words and Path(words[0]).name == "imgclf":
        return words[1:]
    for index in range(len(words) - 1):
        if words[index] == "-m" and words[index + 1] == "imgclf":
            return words[index + 2 :]
    return None


COMMAND_LINES = [
    pytest.param(argv, id=f"{path.relative_to(ROOT)}:{number}")
    for path in [*PAGES, ROOT / "README.md"]
    for number, line in bash_lines(path)
    if (argv := imgclf_argv(line)) is not None
]


@pytest.fixture
def quiet_mkdocs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run mkdocs from the repository root (mkdocs.yml's paths are relative to it), without its banners."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("NO_MKDOCS_2_WARNING", "1")


def test_the_site_builds_without_a_warning(tmp_path: Path, quiet_mkdocs: None) -> None:
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ,
    )
    assert result.returncode == 0, result.stderr
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    assert 'id="imgclf.train"' in api and 'id="imgclf.Run"' in api
    # Docstrings' `>>>` examples render as Python console code, not as Markdown's nested quotes.
    assert '<span class="gp">&gt;&gt;&gt; </span>' in api
    assert "<blockquote" not in api


def test_a_broken_link_fails_the_build(tmp_path: Path, quiet_mkdocs: None) -> None:
    docs = shutil.copytree(DOCS, tmp_path / "docs")
    with (docs / "index.md").open("a", encoding="utf-8") as page:
        page.write("\nSee [the data guide](guides/data.md#no-such-section).\n")
    config = load_config(str(ROOT / "mkdocs.yml"), docs_dir=str(docs), site_dir=str(tmp_path / "site"))
    with pytest.raises(Abort, match="warning"):
        build(config)


@pytest.mark.parametrize("argv", COMMAND_LINES)
def test_every_documented_command_line_parses(argv: list[str]) -> None:
    parse_command_line(argv)


def test_the_command_line_check_refuses_an_unknown_option() -> None:
    parse_command_line(["train", "photos", "--epochs", "3"])
    with pytest.raises(AssertionError, match="--no-such-option"):
        parse_command_line(["train", "photos", "--no-such-option"])
    with pytest.raises(AssertionError, match="invalid choice"):
        parse_command_line(["predict", "RUN", "photo.jpg", "--engine", "tensorflow"])


def test_the_docs_show_every_command() -> None:
    shown = {argv[0] for argv in (param.values[0] for param in COMMAND_LINES) if argv}
    assert [command for command in COMMANDS if command not in shown] == []


def test_the_api_reference_documents_every_public_name() -> None:
    documented = re.findall(r"^::: imgclf\.(\w+)$", (DOCS / "api.md").read_text(encoding="utf-8"), re.MULTILINE)
    assert sorted(documented) == sorted(imgclf.__all__)


@pytest.mark.parametrize("name", imgclf.__all__)
def test_every_public_name_has_a_docstring(name: str) -> None:
    member = getattr(imgclf, name)
    docstring = (member.__doc__ or "").strip()
    assert docstring, f"imgclf.{name} has no docstring"
    assert not docstring.startswith(f"{name}("), f"imgclf.{name} has only the signature dataclasses write"
