"""The command line's options: every command's --help, and usage errors (exit code 2)."""

from __future__ import annotations

import pytest

from imgclf.cli import main


@pytest.mark.parametrize("command", ["train", "predict", "evaluate", "summary", "demo", "cache"])
def test_help_everywhere(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: imgclf" in capsys.readouterr().out


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "data", "--epochs", "many"])
    assert exit_info.value.code == 2
    assert "--epochs" in capsys.readouterr().err


@pytest.mark.parametrize(
    "arguments",
    [["predict", "RUN", "PHOTOS", "--batch-size", "0"], ["summary", "seed-cnn", "--image-size", "8"]],
)
def test_out_of_range_numbers_are_usage_errors(trained_run, cars_planes, arguments, capsys):
    values = {"RUN": str(trained_run.run_dir), "PHOTOS": str(cars_planes / "val_set")}
    with pytest.raises(SystemExit) as exit_info:
        main([values.get(argument, argument) for argument in arguments])
    assert exit_info.value.code == 2
    assert "or more, received" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "RUN", "--max-upload-mb", "inf"],
        ["serve", "RUN", "--timeout", "nan"],
        ["explain", "RUN", "a.jpg", "--alpha", "nan"],
    ],
)
def test_number_options_refuse_infinity_and_nan(argv, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert "is not a finite number" in capsys.readouterr().err
