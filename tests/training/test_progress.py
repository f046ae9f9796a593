"""Progress bars: `imgclf.train` draws one in a terminal or a notebook by itself, and none when told not to."""

from __future__ import annotations

import io

import IPython.display
import pytest
from rich.console import Console
from tests.conftest import make_synthetic_classes

import imgclf
from imgclf.training import progress


@pytest.fixture
def tiny_data(tmp_path):
    return make_synthetic_classes(tmp_path / "data", {"red": 8, "green": 8})


def quick_train(data, out, **options):
    return imgclf.train(
        data, model="seed-cnn", val_split=0.25, epochs=2, batch_size=4, image_size=24, out=str(out), **options
    )


def test_train_draws_a_bar_in_a_terminal_unless_progress_is_false(tiny_data, tmp_path, monkeypatch):
    terminal = io.StringIO()
    monkeypatch.setattr(progress, "stderr", Console(file=terminal, force_terminal=True, width=80))
    quick_train(tiny_data, tmp_path / "shown")
    drawn = terminal.getvalue()
    assert "Epoch 1" in drawn and "Epoch 2" in drawn and "3/3" in drawn and "━" in drawn
    terminal.truncate(0)
    quick_train(tiny_data, tmp_path / "off", progress=False)
    assert terminal.getvalue() == ""


def test_no_bar_where_none_can_render(monkeypatch):
    monkeypatch.setattr(progress, "stderr", Console(file=io.StringIO()))  # piped to a file, or pytest's capture
    assert progress.epoch_bar() is None
    monkeypatch.setattr(progress, "stderr", Console(file=io.StringIO(), force_terminal=True))
    assert progress.epoch_bar() is not None
    monkeypatch.setenv("RANK", "1")  # under torchrun, the main process alone draws
    assert progress.epoch_bar() is None


def test_in_a_notebook_the_bar_is_one_html_output_drawn_again(monkeypatch):
    monkeypatch.setattr(progress, "stderr", Console(file=io.StringIO(), force_jupyter=True))
    outputs = []

    class Handle:
        def update(self, html):
            outputs[-1] = html.data

    def display(html, display_id):
        outputs.append(html.data)
        return Handle()

    monkeypatch.setattr(IPython.display, "display", display)
    monkeypatch.setattr(progress, "NOTEBOOK_REFRESH_S", 0.0)
    bar = progress.epoch_bar()
    for epoch in (1, 2):
        for step in (1, 2, 3):
            bar(epoch, step, 3)
    bar.close()
    assert len(outputs) == 1  # one output, updated in place
    assert outputs[0].startswith("<pre") and "Epoch 2" in outputs[0] and "3/3" in outputs[0]
