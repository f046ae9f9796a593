"""Only the studio's own page may change files: foreign Host, Origin and Sec-Fetch-Site headers get 403."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from imgclf.studio.app import create_app
from imgclf.studio.options import StudioOptions


@pytest.mark.parametrize("host", ["evil.example:8765", "evil.example", "127.0.0.1:9999", "127.0.0.1.evil.example:8765"])
def test_a_foreign_host_is_refused_even_for_reading(client, host):
    response = client.get("/api/projects", headers={"host": host})
    assert response.status_code == 403
    assert "Host header" in response.json()["error"] and host in response.json()["error"]


@pytest.mark.parametrize("host", ["127.0.0.1:8765", "localhost:8765", "[::1]:8765", "LOCALHOST:8765"])
def test_the_studios_own_names_pass(client, host):
    assert client.get("/api/projects", headers={"host": host}).status_code == 200


def test_a_cross_origin_write_is_refused_and_writes_nothing(client, workspace):
    response = client.post("/api/projects", json={"name": "pwned"}, headers={"origin": "http://evil.example"})
    assert response.status_code == 403
    assert "origin='http://evil.example'" in response.json()["error"]
    assert workspace.projects() == []


@pytest.mark.parametrize("origin", ["null", "http://localhost:8765", "https://127.0.0.1:8765"])
def test_an_origin_other_than_the_host_named_is_refused(client, origin):
    assert client.post("/api/projects", json={"name": "x"}, headers={"origin": origin}).status_code == 403


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
def test_a_cross_site_fetch_is_refused(client, workspace, site):
    response = client.post("/api/projects", json={"name": "pwned"}, headers={"sec-fetch-site": site})
    assert response.status_code == 403 and "sec-fetch-site" in response.json()["error"]
    assert workspace.projects() == []


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "http://127.0.0.1:8765", "sec-fetch-site": "same-origin"},
        {"sec-fetch-site": "none"},
        {},  # curl and scripts send neither
    ],
    ids=["same-origin page", "typed by the user", "scriptless"],
)
def test_the_studios_own_page_and_scripts_may_write(client, workspace, headers):
    response = client.post("/api/projects", json={"name": "birds"}, headers=headers)
    assert response.status_code == 201
    assert [p.name for p in workspace.projects()] == ["birds"]


def test_a_cross_site_read_passes_the_check_but_gets_no_cors_header(client):
    response = client.get("/api/projects", headers={"origin": "http://evil.example", "sec-fetch-site": "cross-site"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def test_no_other_site_may_show_the_studio_in_a_frame(client):
    headers = client.get("/").headers
    assert headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in headers["content-security-policy"]


def test_the_page_may_load_and_reach_nothing_but_the_studio(client):
    policy = client.get("/").headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src" not in policy and "connect-src" not in policy
    assert client.get("/api/projects").headers["content-security-policy"] == policy
    assert client.get("/docs").headers["content-security-policy"] == "frame-ancestors 'none'"  # its CDN scripts


def test_the_host_it_was_asked_to_listen_on_is_its_own(tmp_path):
    app = create_app(tmp_path / "ws", StudioOptions(host="studio.lan"))
    with TestClient(app, base_url="http://127.0.0.1:8765") as client:
        assert client.get("/api/projects", headers={"host": "studio.lan:8765"}).status_code == 200
        assert client.get("/api/projects", headers={"host": "other.lan:8765"}).status_code == 403
