"""Weights that would come from the internet: offline, a quick, clear error instead of a minute of retries."""

from __future__ import annotations

import socket

import pytest
from huggingface_hub import constants

import imgclf
from imgclf.cli import main
from imgclf.models import BuildOptions
from imgclf.models.downloads import WeightsError, reachable

CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens there, so a connection is refused at once


def test_reachable_tells_a_listening_port_from_a_closed_one():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert reachable(f"http://127.0.0.1:{server.getsockname()[1]}")
    assert not reachable(CLOSED)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "ENDPOINT", CLOSED)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_a_timm_model_offline_fails_at_once_naming_the_cache_and_the_ways_out(offline_hub, small_photos, capfd):
    with pytest.raises(WeightsError) as raised:
        imgclf.create_model("timm:resnet18", 2, options=BuildOptions(pretrained=True))
    message = str(raised.value)
    assert f"not in the cache ({offline_hub} (repository timm/resnet18" in message
    assert "--weights FILE" in message and "--model efficientnet_lite0" in message
    assert "Retrying" not in capfd.readouterr().err  # the hub client was never asked


def test_the_cli_says_it_in_one_line(offline_hub, small_photos, capsys):
    code = main(["train", str(small_photos / "train"), "--val", str(small_photos / "val"), "--model", "timm:resnet18"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and "timm model resnet18" in errors[0]
