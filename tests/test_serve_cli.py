"""The ``iris-serve`` command line (service/cli.py): help, version, flags over the environment.

The parser is tested as a function; ``--help``, ``--version`` and the usage errors run the
console script in a subprocess; one real server (slow) is started with flags that the
environment contradicts, so it only works when the flags win in the parent and in every worker.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import typing
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field, SecretStr, ValidationError

from harness.api import instances
from harness.servers import (
    ROOT,
    Launch,
    ServerProcess,
    post_fresh_connection,
    serve_command,
    wait_for,
    worker_pids,
)
from model.data import load_iris
from service import cli
from service.config import Settings

FIELDS = Settings.model_fields
FLAGGED = [name for name in FIELDS if name not in cli.ENV_ONLY]


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """os.environ replaced by a copy without IRIS_* variables (restored after the test)."""
    copy = {key: value for key, value in os.environ.items() if not key.upper().startswith("IRIS_")}
    monkeypatch.setattr(os, "environ", copy)
    return copy


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port of 127.0.0.1 that a listening socket of this test holds: binding it fails."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def run_serve(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The console script with ``args``; the environment has no IRIS_* but ``env``."""
    base = {key: value for key, value in os.environ.items() if not key.startswith("IRIS_")}
    return subprocess.run(
        [*serve_command(), *args],
        cwd=cwd,
        env=base | {"PYTHONPATH": str(ROOT)} | (env or {}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def sample_value(name: str) -> tuple[str, Any]:
    """A valid value for the field other than its default: as typed, and as Settings holds it."""
    field = FIELDS[name]
    base = cli._base_type(field.annotation)
    default = field.get_default()
    if typing.get_origin(base) is typing.Literal:
        choice = next(c for c in typing.get_args(base) if c != default)
        return str(choice), choice
    if base is int:
        return str(default + 1), default + 1
    if base is float:
        return str(default * 2), default * 2
    if base is str:
        return "0.0.0.0", "0.0.0.0"
    if base is Path:
        return "some/dir", Path("some/dir")
    if base is SecretStr:
        return "postgresql://iris@db:5432/iris", SecretStr("postgresql://iris@db:5432/iris")
    raise AssertionError(f"{name}: no sample for {field.annotation}: extend sample_value")


def flag_args(name: str) -> list[tuple[list[str], Any]]:
    """Every way to give the field on a command line, with the value Settings must then hold."""
    if cli._base_type(FIELDS[name].annotation) is bool:
        return [([cli.flag(name)], True), (["--no-" + cli.flag(name)[2:]], False)]
    typed, value = sample_value(name)
    return [([cli.flag(name), typed], value), ([f"{cli.flag(name)}={typed}"], value)]


# -- the parser ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FLAGGED)
def test_each_setting_has_a_flag_that_sets_it(name: str, environ: dict[str, str]) -> None:
    for args, value in flag_args(name):
        given = cli.parse_flags(args)
        assert list(given) == [name], args
        assert getattr(cli.settings_from(given), name) == value, args
    # at least one spelling sets something other than the default
    assert any(value != FIELDS[name].get_default() for _, value in flag_args(name))


def test_no_flags_give_nothing_and_the_defaults(environ: dict[str, str]) -> None:
    assert cli.parse_flags([]) == {}
    assert cli.settings_from({}) == Settings()
    assert cli.settings_from({}).port == 8000


def test_secrets_have_no_flag() -> None:
    for name in cli.ENV_ONLY:
        with pytest.raises(SystemExit) as exit_info:
            cli.parse_flags([cli.flag(name), "a-token-in-ps"])
        assert exit_info.value.code == 2


def test_flag_beats_environment_beats_default(environ: dict[str, str]) -> None:
    environ |= {"IRIS_PORT": "7000", "IRIS_MAX_INSTANCES": "5", "IRIS_ACCESS_LOG": "true"}
    settings = cli.settings_from(cli.parse_flags(["--port", "9000", "--no-access-log"]))
    assert settings.port == 9000  # flag over environment
    assert settings.access_log is False
    assert settings.max_instances == 5  # environment over default
    assert settings.workers == 1  # default


def test_exported_flags_are_what_a_worker_reads(environ: dict[str, str]) -> None:
    """A worker builds Settings() from the environment the parent exported: the same values."""
    environ |= {"IRIS_PORT": "7000", "iris_max_instances": "50", "IRIS_SEED": "4"}
    args = ["--port", "9000", "--max-instances", "3", "--workers", "2", "--data-dir", "d"]
    args += ["--access-log", "--database-url", "postgresql://iris@db/iris", "--log-level", "debug"]
    given = cli.parse_flags(args)
    settings = cli.settings_from(given)
    cli.export_settings(settings, given)
    assert "iris_max_instances" not in environ  # would shadow IRIS_MAX_INSTANCES
    assert environ["IRIS_PORT"] == "9000"
    assert Settings() == settings
    assert (Settings().port, Settings().max_instances, Settings().seed) == (9000, 3, 4)


def test_a_new_setting_gets_a_flag_and_a_help_line(monkeypatch: pytest.MonkeyPatch) -> None:
    class Extended(Settings):
        new_knob_seconds: float = Field(1.5, gt=0, description="a knob added later")

    monkeypatch.setattr(cli, "Settings", Extended)
    help_text = cli.build_parser().format_help()
    other = " ".join(help_text.split("other settings:")[1].split())
    assert "--new-knob-seconds NUMBER" in other
    assert "IRIS_NEW_KNOB_SECONDS, default: 1.5" in other
    assert cli.parse_flags(["--new-knob-seconds", "3"]) == {"new_knob_seconds": "3"}


def test_invalid_values_are_named_by_flag_or_variable(environ: dict[str, str]) -> None:
    environ["IRIS_WORKERS"] = "many"
    given = cli.parse_flags(["--port", "70000"])
    with pytest.raises(ValidationError) as error:
        cli.settings_from(given)
    message = cli.describe(error.value, given)
    assert "--port: " in message
    assert "70000" in message
    assert "IRIS_WORKERS: " in message
    assert "IRIS_PORT" not in message
    assert "--workers" not in message


def test_errors_never_show_a_secret_value() -> None:
    with pytest.raises(ValidationError) as error:
        Settings(api_token=123456789)
    message = cli.describe(error.value, [])
    assert message.startswith("IRIS_API_TOKEN: "), message
    assert "123456789" not in message


# -- the console script -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["--help"], ["-h"], ["--port", "{port}", "--data-dir", "{data_dir}", "--workers", "2", "-h"]],
)
def test_help_lists_every_setting_and_starts_nothing(
    args: list[str], tmp_path: Path, held_port: int
) -> None:
    data_dir = tmp_path / "must-not-exist"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    args = [arg.format(port=held_port, data_dir=data_dir) for arg in args]
    env = {"IRIS_PORT": str(held_port), "IRIS_DATA_DIR": str(data_dir), "IRIS_HOST": "127.0.0.1"}
    result = run_serve(*args, cwd=cwd, env=env)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("usage: iris-serve [OPTIONS]\n"), result.stdout
    text = " ".join(result.stdout.split())  # as wrapped to the terminal's width
    for name, field in FIELDS.items():
        assert cli.env_var(name) in text, name
        if name not in cli.ENV_ONLY:
            assert re.search(rf"{cli.flag(name)}[ ,]", text), name
            assert f"[{cli.env_var(name)}, default: {cli._default(field)}]" in text, name
    assert "--api-token" not in text
    assert "iris-serve migrate [DATA_DIR]" in text
    assert not data_dir.exists()
    assert list(cwd.iterdir()) == []  # no ./data, no token, nothing


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    result = run_serve("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"iris-serve {version('iris-service')}\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--max-instances", "0"], {}, "--max-instances: "),
        (["--port=65536"], {}, "--port: "),
        (["--log-level", "loud"], {}, "--log-level: "),
        ([], {"IRIS_WORKERS": "0"}, "IRIS_WORKERS: "),
    ],
)
def test_invalid_setting_exits_2_naming_it(
    args: list[str], env: dict[str, str], named: str, tmp_path: Path
) -> None:
    result = run_serve(*args, cwd=tmp_path, env=env)
    assert result.returncode == 2, result
    assert result.stderr.startswith("iris-serve: invalid settings: "), result.stderr
    assert named in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["stray"], "unrecognized arguments: stray"),
        (["--api-token", "secret"], "unrecognized arguments: --api-token secret"),
        (["--por", "9000"], "unrecognized arguments: --por 9000"),  # no abbreviations
        (["--port"], "argument --port: expected one argument"),
    ],
)
def test_unknown_or_incomplete_arguments_exit_2_with_usage(
    args: list[str], error: str, tmp_path: Path
) -> None:
    result = run_serve(*args, cwd=tmp_path)
    assert result.returncode == 2, result
    assert result.stderr.startswith("usage: iris-serve [OPTIONS]"), result.stderr
    assert f"iris-serve: error: {error}" in result.stderr
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_migrate_keeps_its_own_usage(tmp_path: Path) -> None:
    result = run_serve("migrate", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: iris-serve migrate [-h] [DATA_DIR]")
    result = run_serve("migrate", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert "IRIS_DATABASE_URL is not set" in result.stderr


# -- a real server -------------------------------------------------------------------------------


@pytest.mark.slow
def test_server_listens_on_the_port_flag_and_every_worker_uses_the_flags(
    tmp_path: Path, held_port: int
) -> None:
    """The environment names a port that is taken, another data directory and a limit of 100:
    the server only starts, and refuses 4 rows in every worker, if the flags win."""
    data_dir, env_data_dir = tmp_path / "data", tmp_path / "env-data"
    env = {key: value for key, value in os.environ.items() if not key.startswith("IRIS_")}
    env |= {
        "IRIS_PORT": str(held_port),
        "IRIS_MAX_INSTANCES": "100",
        "IRIS_DATA_DIR": str(env_data_dir),
        "IRIS_WORKERS": "1",
        "IRIS_API_TOKEN": "serve-cli-test-token-0123456789",
        "PYTHONUNBUFFERED": "1",
    }

    def launch(port: int) -> Launch:
        flags = ["--host", "127.0.0.1", "--port", str(port), "--max-instances", "3"]
        flags += ["--workers", "2", "--data-dir", str(data_dir)]
        return Launch([*serve_command(), *flags], env, ROOT)

    server = ServerProcess(data_dir, tmp_path / "server.log", launch=launch)
    rows = instances(load_iris().raw[[0, 50, 100, 149]])
    try:
        server.start()

        def two_workers() -> set[int] | None:
            found = worker_pids(server.pid)
            return found if len(found) == 2 else None

        pids: set[int] = wait_for(two_workers, 10.0, "two workers")
        answered: set[int | None] = set()
        for sent in range(200):
            if answered == pids and sent >= 10:
                break
            status, body, worker = post_fresh_connection(
                server, "/predict", {"instances": rows[:3]}, pids
            )
            assert status == 200, body
            status, body, worker = post_fresh_connection(
                server, "/predict", {"instances": rows}, pids
            )
            assert status == 422, body
            assert "limit of 3 (IRIS_MAX_INSTANCES)" in str(body), body
            answered.add(worker)
        assert answered == pids, f"workers {pids}, answered by {answered}"
        assert (data_dir / "models").is_dir()
        assert not env_data_dir.exists()
    finally:
        server.stop()
        print(server.log())


def test_a_taken_grpc_port_is_refused_before_the_workers_start(tmp_path: Path) -> None:
    """With several workers each binds the gRPC port with SO_REUSEPORT and could not tell
    another server's listener from a sibling's: iris-serve checks the port once, first."""

    from service.__main__ import grpc_port_taken
    from service.config import Settings

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        why = grpc_port_taken(Settings(data_dir=tmp_path, grpc_port=port, workers=2))
        assert why is not None
        assert f"IRIS_GRPC_PORT {port}" in why
        assert "0 to turn gRPC off" in why
    assert grpc_port_taken(Settings(data_dir=tmp_path, grpc_port=port)) is None  # free again
    assert grpc_port_taken(Settings(data_dir=tmp_path, grpc_port=0)) is None
