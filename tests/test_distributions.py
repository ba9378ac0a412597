"""The two distributions: the client installs alone, and neither wheel brings stray names.

Each test builds or installs from this checkout into a fresh virtualenv, fetching what the
build needs from the package index, so they are in the slow tier.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SERVER_ONLY = {"fastapi", "uvicorn", "numpy", "psycopg", "pysimdjson", "pydantic", "starlette"}


def run(*command: str | Path, seconds: float = 600) -> subprocess.CompletedProcess[str]:
    found = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=seconds,
        check=False,
    )
    assert found.returncode == 0, found.stdout[-2000:] + found.stderr[-2000:]
    return found


def test_the_client_installs_alone_without_the_servers_dependencies(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "pip", "install", "--quiet", ROOT / "client")
    listed = run(venv / "bin" / "pip", "list", "--format", "json")
    names = {package["name"].lower() for package in json.loads(listed.stdout)}
    assert {"iris-client", "httpx", "click", "rich"} <= names
    assert not names & (SERVER_ONLY | {"iris-service"}), names & SERVER_ONLY
    assert "Usage: iris" in run(venv / "bin" / "iris", "--help").stdout
    code = "from iris_client import AsyncIrisClient, IrisClient; print(IrisClient.__name__)"
    assert run(venv / "bin" / "python", "-c", code).stdout.strip() == "IrisClient"


@pytest.mark.parametrize(
    ("source", "packages"),
    [(ROOT, {"model", "service"}), (ROOT / "client", {"iris_client"})],
)
def test_a_wheel_holds_only_its_own_packages(
    tmp_path: Path, source: Path, packages: set[str]
) -> None:
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", tmp_path, source)
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        top = {name.split("/", 1)[0] for name in archive.namelist()}
    assert {name for name in top if not name.endswith(".dist-info")} == packages
