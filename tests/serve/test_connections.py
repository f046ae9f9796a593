"""The connection guards against a real server on 127.0.0.1: the deadline for a request's headers, the cap on open
connections, and JSON for requests too malformed to reach the app."""

from __future__ import annotations

import json
import select
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import pytest
from tests.conftest import best_photo_per_class
from tests.serve.conftest import held, running

from imgclf.config import ConfigError
from imgclf.serve import ServeOptions, create_app
from imgclf.serve.options import descriptor_limit

PARTIAL_REQUEST = b"GET /health HTTP/1.1\r\nHost: imgclf\r\n"  # the blank line that ends the headers never comes


def connect(url: str) -> socket.socket:
    address = urlsplit(url)
    return socket.create_connection((address.hostname, address.port), timeout=30)


def closed_by_server(sockets: list[socket.socket], at_least: int, within_s: float = 30) -> int:
    """How many of `sockets` the server has closed, reading (and dropping) whatever it sent before; waits until
    `at_least` are closed, or at most `within_s` seconds."""
    open_sockets, closed = list(sockets), 0
    deadline = time.monotonic() + within_s
    while closed < at_least and open_sockets and (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select(open_sockets, [], [], left)
        for sock in readable:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                open_sockets.remove(sock)
                closed += 1
    return closed


def raw_answer(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as it is and read the answer to the end of the connection: status, headers, body."""
    with connect(url) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, body


def test_idle_connections_past_the_cap_are_closed_and_a_request_is_still_answered(trained_run, caplog):
    options = ServeOptions(max_connections=8, header_timeout_s=60)
    with running(create_app(trained_run, options), options) as url:
        idle = [connect(url) for _ in range(20)]
        for sock in idle[::2]:
            sock.sendall(PARTIAL_REQUEST)
        response = httpx.get(url + "health", timeout=30)
        # 20 idle connections and the request's own against a cap of 8: the 13 oldest idle ones are closed.
        closed = closed_by_server(idle, at_least=13)
        for sock in idle:
            sock.close()
    assert response.status_code == 200 and response.json()["status"] == "ok"
    assert closed == 13
    reports = [record for record in caplog.records if "max_connections" in record.getMessage()]
    assert len(reports) == 1, "refusals are reported once an interval, not once a connection"
    assert "Too many open files" not in caplog.text


def test_a_connection_that_does_not_send_its_headers_in_time_is_closed(trained_run):
    options = ServeOptions(header_timeout_s=0.5)
    with running(create_app(trained_run, options), options) as url:
        silent, partial, after_an_answer = connect(url), connect(url), connect(url)
        partial.sendall(PARTIAL_REQUEST)
        # One whole request, answered, then the start of a second that never ends.
        after_an_answer.sendall(b"GET /health HTTP/1.1\r\nHost: imgclf\r\n\r\n" + PARTIAL_REQUEST)
        closed = closed_by_server([silent, partial, after_an_answer], at_least=3)
        for sock in (silent, partial, after_an_answer):
            sock.close()
        assert httpx.get(url + "health", timeout=30).status_code == 200
    assert closed == 3


def test_at_the_cap_with_every_connection_busy_a_new_one_gets_503_json(trained_run, cars_planes):
    photo = best_photo_per_class(trained_run, cars_planes / "val_set")["cars"]
    run, entered, release = held(trained_run)
    options = ServeOptions(max_connections=1)
    with running(create_app(run, options), options) as url, ThreadPoolExecutor(1) as client:
        busy = client.submit(httpx.post, url + "predict", content=photo.read_bytes(), timeout=60)
        assert entered.wait(30)
        refused = httpx.get(url + "health", timeout=30)
        release.set()
        answered = busy.result()
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "1 connections open, its limit" in refused.json()["error"]
    assert answered.status_code == 200 and answered.json()["label"] == "cars"


@pytest.mark.parametrize("length", [b"12abc", b"-1", b"1, 2"])
def test_a_malformed_content_length_gets_a_json_400(trained_run, length):
    with running(create_app(trained_run)) as url:
        request = b"POST /predict HTTP/1.1\r\nHost: imgclf\r\nContent-Length: " + length + b"\r\n\r\n"
        status, headers, body = raw_answer(url, request)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert "Content-Length" in json.loads(body)["error"]


def test_the_connection_cap_stays_below_the_open_files_limit():
    assert 0 < ServeOptions().max_connections < descriptor_limit()
    with pytest.raises(ConfigError, match=f"limit of {descriptor_limit()} open files"):
        ServeOptions(max_connections=descriptor_limit())
