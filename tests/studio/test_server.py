"""`imgclf studio`: the address it takes and prints, the browser it opens, the warning off this machine."""

from __future__ import annotations

import logging

import httpx
import pytest
from tests.serve.conftest import running

from imgclf.cli import main
from imgclf.serve.options import MB
from imgclf.studio import server
from imgclf.studio.app import create_app
from imgclf.studio.options import StudioOptions
from imgclf.studio.server import page_url, studio


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """What `studio` opened in the browser, and the uvicorn server it ran with the addresses of its sockets
    (uvicorn's run replaced by this record)."""
    record: dict[str, list] = {"opened": [], "served": []}

    def run(uvicorn_server, sockets):
        record["served"].append((uvicorn_server, [sock.getsockname()[:2] for sock in sockets]))

    monkeypatch.setattr(server.webbrowser, "open", record["opened"].append)
    monkeypatch.setattr(server.uvicorn.Server, "run", run)
    return record


def test_the_studio_listens_on_this_machine_says_where_and_opens_the_browser(tmp_path, started, caplog, monkeypatch):
    monkeypatch.setenv("DISPLAY", ":0")
    with caplog.at_level(logging.INFO, logger="imgclf"):
        studio(tmp_path / "ws")
    [(uvicorn_server, [(host, port)])] = started["served"]
    assert host == "127.0.0.1" and port > 0
    assert started["opened"] == [f"http://127.0.0.1:{port}/"]
    assert f"http://127.0.0.1:{port}/" in caplog.text and "anyone" not in caplog.text
    assert uvicorn_server.config.access_log is False and (tmp_path / "ws").is_dir()


def test_another_host_is_warned_of_and_no_browser_opens_when_asked(tmp_path, started, caplog, monkeypatch):
    monkeypatch.setenv("DISPLAY", ":0")
    studio(tmp_path / "ws", StudioOptions(host="0.0.0.0", open_browser=False))
    assert started["opened"] == []
    [warning] = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert "anyone who can reach this machine" in warning.getMessage() and str(tmp_path / "ws") in warning.getMessage()


def test_no_browser_opens_without_a_display(tmp_path, started, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(server.sys, "platform", "linux")
    studio(tmp_path / "ws")
    assert started["opened"] == [] and len(started["served"]) == 1


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8765/"),
        ("localhost", "http://127.0.0.1:8765/"),
        ("0.0.0.0", "http://127.0.0.1:8765/"),
        ("::", "http://127.0.0.1:8765/"),
        ("192.168.1.5", "http://192.168.1.5:8765/"),
        ("fe80::1", "http://[fe80::1]:8765/"),
    ],
)
def test_the_page_url_is_this_machines_own_when_it_can_be(host, url):
    assert page_url(host, 8765) == url


def test_the_command_line_passes_its_options(tmp_path, monkeypatch):
    given = []
    monkeypatch.setattr(server, "studio", lambda workspace, options: given.append((workspace, options)))
    argv = ["studio", str(tmp_path / "ws"), "--port", "8765", "--no-browser", "--max-upload-mb", "5"]
    assert main(argv) == 0
    assert given == [(str(tmp_path / "ws"), StudioOptions(port=8765, open_browser=False, max_upload_bytes=5 * MB))]


def test_a_real_server_checks_the_host_against_the_port_it_listens_on(tmp_path):
    options = StudioOptions()
    with running(create_app(tmp_path / "ws", options), options.uploads) as url:
        port = httpx.URL(url).port
        assert httpx.get(f"{url}api/projects").status_code == 200
        assert httpx.get(f"{url}api/projects", headers={"host": f"localhost:{port}"}).status_code == 200
        assert httpx.get(f"{url}api/projects", headers={"host": f"rebound.example:{port}"}).status_code == 403
        assert httpx.get(f"{url}api/projects", headers={"host": f"127.0.0.1:{port + 1}"}).status_code == 403
        response = httpx.post(f"{url}api/projects", json={"name": "x"}, headers={"origin": "http://evil.example"})
        assert response.status_code == 403
