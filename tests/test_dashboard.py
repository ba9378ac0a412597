"""The dashboard's files as the service serves them: headers, caching, the fixed file table."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from harness.api import assert_problem, make_client

UI = Path(__file__).resolve().parents[1] / "service" / "ui"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with make_client(tmp_path_factory.mktemp("dashboard")) as c:
        yield c


def referenced_files() -> set[str]:
    """Every /ui/ file the page and its modules name."""
    html = (UI / "index.html").read_text()
    names = set(re.findall(r'(?:src|href)="/ui/([^"]+)"', html))
    for script in UI.glob("*.js"):
        names |= set(re.findall(r'from "\./([^"]+)"', script.read_text()))
    return names


def test_the_page_is_served_at_the_root_with_its_security_headers(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "<h1>Iris species service</h1>" in response.text
    assert response.content == (UI / "index.html").read_bytes()


@pytest.mark.parametrize(
    ("name", "media_type"),
    [("app.css", "text/css"), ("main.js", "text/javascript"), ("icon.svg", "image/svg+xml")],
)
def test_assets_carry_their_media_type_and_the_same_headers(
    client: TestClient, name: str, media_type: str
) -> None:
    response = client.get(f"/ui/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == media_type
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content == (UI / name).read_bytes()


def test_every_file_the_page_names_is_served(client: TestClient) -> None:
    names = referenced_files()
    assert {"main.js", "app.css", "api.js", "predict.js", "train.js"} <= names
    for name in sorted(names):
        assert client.get(f"/ui/{name}").status_code == 200, name


def test_a_reload_with_the_etag_is_a_304_without_body(client: TestClient) -> None:
    first = client.get("/ui/main.js")
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "no-cache"
    again = client.get("/ui/main.js", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    changed = client.get("/ui/main.js", headers={"If-None-Match": '"something-else"'})
    assert changed.status_code == 200
    assert changed.content == first.content
    assert client.get("/ui/app.css").headers["etag"] != etag


@pytest.mark.parametrize(
    "path",
    [
        "/ui/nothing.js",
        "/ui/..%2Fdashboard.py",
        "/ui/%2e%2e%2fmain.py",
        "/ui/../service/main.py",
        "/ui/.%2e/.%2e/pyproject.toml",
        "/ui/",
        "/ui/main.js%00.png",
    ],
)
def test_only_the_known_files_are_served(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert b"import " not in response.content
    assert b"[project]" not in response.content


def test_unknown_dashboard_file_is_a_problem_naming_it(client: TestClient) -> None:
    body = assert_problem(client.get("/ui/missing.css"), 404, "missing.css")
    assert body["instance"] == "/ui/missing.css"


def test_the_files_load_nothing_from_other_hosts_and_inject_no_html() -> None:
    for path in UI.iterdir():
        text = path.read_text()
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.\w+[^\s\"')]*", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (path.name, urls)
        for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert unsafe not in text, (path.name, unsafe)
    html = (UI / "index.html").read_text()
    assert " style=" not in html
    assert "<style" not in html
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"


def test_the_token_travels_only_in_a_header() -> None:
    api = (UI / "api.js").read_text()
    assert "sessionStorage" in api
    assert "localStorage" not in api
    assert "Authorization = `Bearer ${getToken()}`" in api
    for script in UI.glob("*.js"):
        assert not re.search(r"token=|[?&]token", script.read_text()), script.name
