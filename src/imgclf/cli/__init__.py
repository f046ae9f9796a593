"""The `imgclf` command line: parse, call the library, print, exit (0 ok, 1 user error, 2 usage error).

`parser.py` holds the options (`train_options.py` those of `imgclf train`, `config_file.py` the values of its
`--config FILE.toml`), `commands.py` one function per command, `output.py` what is printed.

imgclf train DATA --val VAL [options] [--nproc N]   (N processes: torchrun --standalone --nproc-per-node N -m imgclf)
imgclf predict RUN PATH... [--format table|csv|json] [--output FILE] [--engine auto|torch|onnx|openvino] [--device]
imgclf predict RUN PATH... --format csv --output FILE [--resume] [--nproc N]   (row by row; N processes: torchrun)
imgclf predict RUN PATH... --sort-into DIR [--link]   (exit 1: no image readable; with --strict: any unreadable)
imgclf evaluate RUN DIR [--tta] [--min-confidence P] [--device auto|cpu|cuda]
imgclf report RUN [DIR]
imgclf export RUN [--format onnx]
imgclf summary MODEL_OR_RUN
imgclf demo [--data DIR]
imgclf serve RUN [--host 127.0.0.1] [--port 8000] [--engine auto|torch|onnx|openvino]
imgclf audit DATA [--val DIR] [--test DIR] [--out DIR] [--fail-on leakage,corrupt,...]   (exit 3: a --fail-on find)
imgclf fix ISSUES.csv --data DATA [--dry-run] [--create-classes]   |   imgclf fix --undo JOURNAL
imgclf explain RUN IMAGE... [--out DIR] [--class NAME] [--alpha 0.5]
imgclf cache [--clear features|decoded|onnx|all] [--older-than DAYS]
imgclf runs [DIR] [--compare A B] [--format table|csv|json]
imgclf studio [WORKSPACE] [--host 127.0.0.1] [--port 0] [--no-browser]   (a local browser app)
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from rich.markup import escape

from imgclf.cli.output import ConsoleLogHandler
from imgclf.cli.parser import parse_args
from imgclf.config import ImgclfError
from imgclf.files import is_main_process
from imgclf.training.progress import stderr

INTERRUPTED = 130  # as a shell reports a command stopped by Ctrl-C (128 + SIGINT)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    # imgclf's own progress lines at INFO; other libraries (the ONNX exporter is chatty) only from WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[ConsoleLogHandler()], force=True)
    logging.getLogger("imgclf").setLevel(logging.INFO)
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        args = parse_args(argv)
        args.argv = argv  # `train --nproc N` runs the same command again under torchrun
        # Only now, with a command to run: `--help` and usage errors answer without PyTorch.
        from imgclf.cli.commands import COMMANDS

        return COMMANDS[args.command](args)
    except ImgclfError as error:
        if is_main_process():  # under torchrun every process meets the same error; one says it
            _print_error(error)
        return error.exit_code
    except OSError as error:  # a path the user gave that cannot be read or written: say which, and why
        if error.filename is None:
            raise
        path = error.filename2 or error.filename  # a rename's target, not the temporary file written first
        stderr.print(f"[red]error:[/red] {escape(f'Cannot use {path}: {error.strerror}.')}", highlight=False)
        return 1
    except KeyboardInterrupt:
        stderr.print("[yellow]Interrupted.[/yellow]")
        return INTERRUPTED


def _print_error(error: ImgclfError) -> None:
    """The error's one line on stderr; an interruption is no mistake, and its line says how to resume."""
    if error.exit_code == INTERRUPTED:
        stderr.print(f"[yellow]{escape(str(error))}[/yellow]")
    else:
        stderr.print(f"[red]error:[/red] {escape(str(error))}", highlight=False)
