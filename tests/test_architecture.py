"""docs/architecture.md's walks are the code's: each file and function they name, and no other.

The one-row /predict and /v2 infer walks are traced: the request runs through the app (its
edge included) with a profiler on the event loop's thread, which records the product files
and functions that ran; the walk must list exactly those files, and name only functions that
ran. The protocol (service/server.py) is below the app and listed without being traced. The
training walk spans processes: each file and function it names must exist.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from fastapi.testclient import TestClient

from harness.api import AUTH, ROW, make_client

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
PRODUCT = ("model/", "service/")
BELOW_THE_APP = {"service/server.py"}
ITEM = re.compile(r"^- `([\w/]+\.py)`(?: \(([^)]*)\))?", re.M)


def walk(name: str) -> dict[str, set[str]]:
    """The files of a walk, each with the functions it names."""
    text = DOC.read_text()
    found = re.search(rf"<!-- walk: {name} -->\n(.*?)<!-- /walk -->", text, re.S)
    assert found is not None, f"no walk {name!r} in {DOC}"
    return {
        path: set(re.findall(r"`(\w+)`", functions or ""))
        for path, functions in ITEM.findall(found.group(1))
    }


def traced(client: TestClient, path: str, body: Any) -> dict[str, set[str]]:
    """The product files (and their functions) that ran for one request, after a warm-up."""
    assert client.post(path, json=body).status_code == 200
    ran: dict[str, set[str]] = {}

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call":
            file = Path(frame.f_code.co_filename)
            if file.is_relative_to(ROOT):
                relative = file.relative_to(ROOT).as_posix()
                if relative.startswith(PRODUCT):
                    ran.setdefault(relative, set()).add(frame.f_code.co_name)

    assert client.portal is not None
    client.portal.call(sys.setprofile, profile)  # the app runs on the portal's thread
    try:
        assert client.post(path, json=body, headers=AUTH).status_code == 200
    finally:
        client.portal.call(sys.setprofile, None)
    return ran


@pytest.mark.parametrize(
    ("name", "path", "body"),
    [
        ("predict", "/predict", {"instances": [ROW]}),
        (
            "v2",
            "/v2/models/iris/infer",
            {
                "inputs": [
                    {"name": "measurements", "shape": [1, 4], "datatype": "FP64",
                     "data": list(ROW.values())}
                ]
            },
        ),
    ],
)  # fmt: skip
def test_a_traced_request_passes_exactly_the_files_of_its_walk(
    tmp_path: Path, name: str, path: str, body: Any
) -> None:
    listed = walk(name)
    with make_client(tmp_path) as client:
        ran = traced(client, path, body)
    assert set(listed) - BELOW_THE_APP == set(ran), (
        f"listed, did not run: {sorted(set(listed) - BELOW_THE_APP - set(ran))}; "
        f"ran, not listed: {sorted(set(ran) - set(listed))}"
    )
    for file, functions in listed.items():
        assert functions <= ran.get(file, functions), (file, functions - ran.get(file, set()))


def test_every_file_and_function_of_the_training_walk_exists() -> None:
    listed = walk("train")
    assert len(listed) >= 10
    for file, functions in listed.items():
        assert (ROOT / file).is_file(), file
        module = importlib.import_module(file.removesuffix(".py").replace("/", "."))
        namespaces = [module, *(v for v in vars(module).values() if isinstance(v, type))]
        for function in functions:
            assert any(hasattr(space, function) for space in namespaces), (file, function)


def test_the_hot_routes_are_one_table_the_edge_answers_and_openapi_describes(
    tmp_path: Path,
) -> None:
    """Hot routes are no FastAPI routes (no second handler that could answer otherwise);
    each is in the OpenAPI document, described from the table, and answered by the edge;
    another method at its path is a 405 in the route's error shape."""
    from service.main import HOT_ROUTES

    paths = {route.path for route in HOT_ROUTES.routes}
    assert paths >= {"/predict", "/gradients", "/v2/models/{model_name}/infer"}
    with make_client(tmp_path) as client:
        routed = {getattr(route, "path", None) for route in client.app.routes}  # type: ignore[attr-defined]
        assert not paths & routed
        documented = client.get("/openapi.json").json()["paths"]
        for route in HOT_ROUTES.routes:
            operation = documented[route.path][route.method.lower()]
            assert operation["summary"] == route.openapi["summary"]
        wrong = client.get("/predict")
        assert wrong.status_code == 405
        assert wrong.headers["allow"] == "POST"
        assert wrong.headers["content-type"] == "application/problem+json"
        wrong = client.put("/v2/models/iris/versions/x/infer", json={})
        assert (wrong.status_code, wrong.headers["allow"]) == (405, "POST")
        assert "PUT is not allowed" in wrong.json()["error"]
