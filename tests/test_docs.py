"""The documentation holds to the code: the settings table, links, the README's size and quick
start, and the MkDocs site's strict build.

Fast tier, except the quick start, which runs the README's commands against a real
``iris-serve`` (marked ``slow``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.servers import ServerProcess
from service.config import Settings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CONFIGURATION = DOCS / "configuration.md"
README_LIMIT = 16 * 1024
SETTINGS_HEADER = ("variable", "default", "meaning")
QUICKSTART_MARK = "<!-- quickstart -->"

# -- reading Markdown ----------------------------------------------------------------------------

FENCE = re.compile(r"^```.*?^```", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")  # inline links and images
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.M)


def cells(row: str) -> list[str]:
    """The cells of a Markdown table row, stripped."""
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def table_after(text: str, header: tuple[str, ...]) -> list[list[str]]:
    """The body rows of the one table whose header row is ``header``."""
    lines = text.splitlines()
    starts = [
        i for i, line in enumerate(lines) if line.startswith("|") and tuple(cells(line)) == header
    ]
    if len(starts) != 1:
        raise AssertionError(f"expected one table headed {header}, found {len(starts)}")
    rows = []
    for line in lines[starts[0] + 2 :]:  # past the header and the |---| line
        if not line.startswith("|"):
            break
        rows.append(cells(line))
    return rows


def slug(heading: str) -> str:
    """The anchor Python-Markdown's toc extension (and so MkDocs) gives a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    return {slug(heading) for heading in HEADING.findall(FENCE.sub("", path.read_text()))}


def relative_links(path: Path) -> list[str]:
    """Link and image targets of a Markdown file that are not URLs, code left out."""
    text = INLINE_CODE.sub("", FENCE.sub("", path.read_text()))
    return [
        target
        for target in LINK.findall(text)
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I)  # http:, https:, mailto:
    ]


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


# -- the configuration page ----------------------------------------------------------------------


def shown_default(value: Any) -> str:
    """A setting's default as the configuration page writes it."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_configuration_page_lists_exactly_the_settings_with_their_defaults() -> None:
    rows = table_after(CONFIGURATION.read_text(), SETTINGS_HEADER)
    shown = [(row[0].strip("`"), row[1].strip("`")) for row in rows]
    names = [name for name, _ in shown]
    assert len(names) == len(set(names)), f"a setting listed twice: {sorted(names)}"
    expected = {
        f"IRIS_{name.upper()}": shown_default(field.get_default(call_default_factory=True))
        for name, field in Settings.model_fields.items()
    }
    assert dict(shown) == expected


def test_every_setting_of_the_readme_table_is_a_setting_with_its_default() -> None:
    rows = table_after(README.read_text(), SETTINGS_HEADER)
    full = {row[0]: row[1] for row in table_after(CONFIGURATION.read_text(), SETTINGS_HEADER)}
    assert rows, "the README's settings table is empty"
    for row in rows:
        assert row[0] in full, f"{row[0]} is not on the configuration page"
        assert row[1] == full[row[0]], f"{row[0]}: README says {row[1]}, the page {full[row[0]]}"


# -- the README and the links --------------------------------------------------------------------


def test_readme_is_a_front_page_of_at_most_16_kib() -> None:
    size = len(README.read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes, over {README_LIMIT}"


def test_readme_shows_make_serve_and_make_test_first() -> None:
    text = README.read_text()
    first_block = FENCE.search(text)
    assert first_block is not None, "README.md has no code block"
    commands = [line.split("#")[0].strip() for line in first_block.group().splitlines()]
    assert commands[1:3] == ["make serve", "make test"], first_block.group()


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_a_file_that_exists(path: Path) -> None:
    links = relative_links(path)
    broken = []
    for target in links:
        file_part, _, fragment = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            broken.append(f"{target}: no {resolved}")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(f"{target}: no heading #{fragment} in {resolved.name}")
    assert not broken, f"{path.name}: " + "; ".join(broken)


def test_the_link_check_finds_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n[a](missing.md) [b](page.md#page) `[c](ignored.md)`\n")
    assert relative_links(page) == ["missing.md", "page.md#page"]
    assert anchors(page) == {"page"}


# -- the site ------------------------------------------------------------------------------------


def test_the_documentation_site_builds_in_strict_mode(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and mkdocs or mkdocs-material is not installed (make docs)")
        pytest.skip("mkdocs is not installed: `make docs` installs the docs extra")
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=os.environ | {"NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    built = {page.stem for page in site.glob("*.html")}
    assert {page.stem for page in DOCS.glob("*.md")} <= built, sorted(built)


# -- the quick start against a real server -------------------------------------------------------


def quickstart_commands(text: str) -> list[str]:
    """The shell commands of the code block after the quick-start mark, one per command."""
    start = text.find(QUICKSTART_MARK)
    assert start >= 0, f"README.md has no {QUICKSTART_MARK} mark"
    block = FENCE.search(text, start)
    assert block is not None, "no code block after the quick-start mark"
    commands: list[str] = []
    pending = ""
    for line in block.group().splitlines()[1:-1]:
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        commands.append(pending + line)
        pending = ""
    assert not pending, f"a continued line ends the block: {pending!r}"
    return commands


def test_quickstart_commands_are_read_whole() -> None:
    text = f"x\n{QUICKSTART_MARK}\n```sh\n# a\ncurl -s a \\\n  -d 'b'\n# out\n\nls\n```\n"
    assert quickstart_commands(text) == ["curl -s a    -d 'b'", "ls"]


@dataclass
class Quickstart:
    server: ServerProcess
    first_version: str

    def models(self) -> dict[str, Any]:
        with self.server.client() as client:
            answer: dict[str, Any] = client.get("/models").raise_for_status().json()
            return answer


def predicted_setosa(out: str, run: Quickstart) -> None:
    answer = json.loads(out)
    assert answer["model_version"] == run.first_version
    assert [p["label"] for p in answer["predictions"]] == ["setosa"]


def trained_a_new_current_version(out: str, run: Quickstart) -> None:
    models = run.models()
    assert models["current"] != run.first_version, out
    assert len(models["models"]) == 2, models
    assert models["current"] in out, out


def listed_the_versions(out: str, run: Quickstart) -> None:
    versions = [model["version"] for model in run.models()["models"]]
    assert all(version in out for version in versions), out


def served_the_dashboard(out: str, run: Quickstart) -> None:
    assert out.strip() == "<title>Iris species service</title>"


# Each command of the quick start is checked by the one entry whose key it contains; every entry
# is used once, so a step left out of the README (or a new one without a check) fails.
CHECKS: dict[str, Callable[[str, Quickstart], None]] = {
    "/predict": predicted_setosa,
    "iris train": trained_a_new_current_version,
    "iris models": listed_the_versions,
    "<title>": served_the_dashboard,
}


@pytest.fixture
def quickstart_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path / "data", tmp_path / "server.log")
    try:
        yield server.start()
    finally:
        server.stop()


def as_run_here(command: str, server: ServerProcess) -> str:
    """The README's command with this server's URL, data directory and virtualenv."""
    bin_dir = Path(sys.executable).parent
    return (
        command.replace("http://127.0.0.1:8000", server.url)
        .replace("data/api_token", shlex.quote(str(server.data_dir / "api_token")))
        .replace(".venv/bin/", shlex.quote(str(bin_dir)) + "/")
    )


@pytest.mark.slow
def test_readme_quickstart_runs_against_a_real_server(quickstart_server: ServerProcess) -> None:
    commands = quickstart_commands(README.read_text())
    assert (Path(sys.executable).parent / "iris").is_file(), "the iris command is not installed"
    with quickstart_server.client() as client:
        first = client.get("/models").raise_for_status().json()["current"]
    run = Quickstart(quickstart_server, first)
    env = {key: value for key, value in os.environ.items() if not key.startswith("IRIS_")}
    env["IRIS_URL"] = quickstart_server.url  # the iris command's default is port 8000
    used = []
    for command in commands:
        keys = [key for key in CHECKS if key in command]
        assert len(keys) == 1, f"no single check for the quick-start command {command!r}: {keys}"
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", as_run_here(command, quickstart_server)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, (
            f"{command!r} exited {result.returncode}\nstdout: {result.stdout}\n"
            f"stderr: {result.stderr}\nserver log:\n{quickstart_server.log()}"
        )
        assert result.stdout.strip(), f"{command!r} printed nothing"
        CHECKS[keys[0]](result.stdout, run)
        used.append(keys[0])
    assert sorted(used) == sorted(CHECKS), f"quick-start steps run: {used}"


def test_quickstart_commands_get_this_servers_url_data_directory_and_virtualenv() -> None:
    server = ServerProcess(Path("/tmp/x y/data"), Path("/tmp/log"))
    server.port = 1234
    ran = as_run_here(
        "curl -s http://127.0.0.1:8000/ && T=$(cat data/api_token) .venv/bin/iris models", server
    )
    bin_dir = shlex.quote(str(Path(sys.executable).parent))
    token = "'/tmp/x y/data/api_token'"
    assert ran == f"curl -s http://127.0.0.1:1234/ && T=$(cat {token}) {bin_dir}/iris models"
