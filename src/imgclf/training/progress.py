"""Progress bars, in a terminal or a Jupyter notebook: the bar over each epoch's steps, and the commands' bars.

`imgclf.train` draws the epoch bar itself when it is given no `progress` callback and a bar can render (stderr
is a terminal, or the code runs in a notebook); otherwise, piped to a file or under pytest's capture, it only
logs. `progress=False` turns the bar off. The command line draws the same bars on the same console.

Only rich is imported here: `imgclf --help` must not wait for PyTorch.
"""

from __future__ import annotations

import io
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from imgclf.files import is_main_process

stderr = Console(stderr=True, soft_wrap=True)
"""The console of progress bars and log lines: printing through it keeps the lines above a bar."""

NOTEBOOK_REFRESH_S = 0.25
"""How often a notebook's bar is drawn again: each drawing is a message to the notebook."""

# rich's own <pre> for notebooks (rich.jupyter), which draws a bar with ipywidgets alone.
_NOTEBOOK_HTML = (
    '<pre style="white-space:pre;overflow-x:auto;line-height:normal;'
    "font-family:Menlo,'DejaVu Sans Mono',consolas,'Courier New',monospace\">{code}</pre>"
)


def progress_bar(
    label: str, console: Console | None = None, rate: bool = False, terminal_only: bool = False
) -> Progress:
    """A transient progress bar on `console` (default `stderr`): `label`, the bar, done of total, time elapsed;
    with `rate`, also images a second and the time left. With `terminal_only`, none where the console is no
    terminal (a script's log)."""
    console = console or stderr
    columns = [TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    if rate:
        columns += [ImagesPerSecondColumn(), TextColumn("left"), TimeRemainingColumn()]
    # Even when hidden, a bar leaves a blank line in a file: a script would read it before the error line.
    return Progress(*columns, console=console, transient=True, disable=terminal_only and not console.is_terminal)


class ImagesPerSecondColumn(ProgressColumn):
    """How many images a second the task is doing, once rich has measured it."""

    def render(self, task: Task) -> Text:
        return Text("" if task.speed is None else f"{task.speed:,.0f} img/s")


class EpochBar:
    """A progress bar over the steps of each epoch: `imgclf.train` calls it as `progress(epoch, step, steps)`.

    The bar appears with the first step, so an error before training starts is the only line printed. In a
    terminal it goes when training ends; in a notebook (`notebook=True`) it is an HTML output that stays.
    """

    def __init__(self, console: Console | None = None, notebook: bool = False):
        self.progress = progress_bar("Epoch {task.fields[epoch]}", console)
        self.notebook = notebook
        self.task = None
        self.epoch = None
        self._display = None
        self._drawn_at = 0.0

    def __enter__(self) -> EpochBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, epoch: int, step: int, steps: int) -> None:
        if self.task is None and not self.notebook:
            self.progress.start()
        if epoch != self.epoch:
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task("train", total=steps, epoch=epoch)
            self.epoch = epoch
        self.progress.update(self.task, completed=step)
        if self.notebook and (step == steps or time.monotonic() - self._drawn_at >= NOTEBOOK_REFRESH_S):
            self._draw_in_notebook()

    def close(self) -> None:
        """Take a terminal's bar away (a notebook's stays, as last drawn)."""
        if self.task is not None and not self.notebook:
            self.progress.stop()

    def _draw_in_notebook(self) -> None:
        from IPython.display import HTML, display

        console = Console(file=io.StringIO(), record=True, width=100, force_terminal=True, force_jupyter=False)
        console.print(self.progress.get_renderable())
        html = HTML(console.export_html(inline_styles=True, code_format=_NOTEBOOK_HTML))
        if self._display is None:
            self._display = display(html, display_id=True)
        else:
            self._display.update(html)
        self._drawn_at = time.monotonic()


def epoch_bar() -> EpochBar | None:
    """The bar `imgclf.train` draws when given no `progress`: in a notebook or a terminal, on the main process
    alone (under torchrun); None where a bar cannot render."""
    if not is_main_process():
        return None
    if stderr.is_jupyter:
        return EpochBar(notebook=True)
    return EpochBar() if stderr.is_terminal else None
