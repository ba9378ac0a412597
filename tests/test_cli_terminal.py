"""The ``iris`` command line as a new user meets it: listings at 80 columns, ``-o``, short
ids, ``iris login``, a piped ``--follow``, predict's own columns beside the input's, and
shell completion. Tests marked slow run a real ``iris-serve``; the others a stub in-process.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import queue
import re
import select
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from iris_client.cli import cli
from iris_client.ids import resolve, short_ids, short_versions
from iris_client.settings import PROGRESS_SECONDS

from harness.clients import (
    JOB_SECONDS,
    LONG_JOB,
    TOKEN,
    LocalHTTP,
    client_server,
    read_body,
    send_json,
    wait_idle,
)
from harness.servers import ServerProcess, free_port, wait_for

JOB_HEADERS = ["JOB", "STATUS", "EPOCH", "VAL ACC", "VERSION", "CREATED"]
MODEL_HEADERS = ["VERSION", "CURRENT", "CREATED", "HIDDEN", "VAL ACC", "TRAIN ACC"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
# A POSIX zone needing no tz database: UTC-5, named EST, no daylight saving.
ZONE = "EST+5"


def iris_script() -> str:
    found = Path(sys.executable).with_name("iris")
    assert found.is_file(), f"no iris console script next to {sys.executable}: pip install -e ."
    return str(found)


def clean_env(config: Path, **more: str) -> dict[str, str]:
    """This process's environment without IRIS_* settings, with its own config directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRIS_")}
    env.pop("FORCE_COLOR", None)
    return env | {"XDG_CONFIG_HOME": str(config)} | more


def invoke(*args: str, env: dict[str, str | None], input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, env=env)


def in_terminal(args: list[str], env: dict[str, str], columns: int = 80) -> str:
    """The console script's output in a pseudo-terminal ``columns`` wide, ANSI removed."""
    main, tty = os.openpty()
    fcntl.ioctl(tty, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = env | {"COLUMNS": str(columns), "LINES": "40", "TERM": "xterm-256color"}
    proc = subprocess.Popen(
        [iris_script(), *args], stdin=tty, stdout=tty, stderr=tty, env=env, start_new_session=True
    )
    os.close(tty)
    chunks = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the other end closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(10) == 0, b"".join(chunks).decode(errors="replace")
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    return ANSI.sub("", b"".join(chunks).decode()).replace("\r\n", "\n")


# -- a stub that lists what a test gives it and records what it was sent ------------------------


class Recorder(LocalHTTP):
    """An HTTP server on 127.0.0.1: ``answers[path]`` is (status, JSON body); else 404."""

    def __init__(self, answers: dict[str, tuple[int, Any]]) -> None:
        super().__init__()
        self.answers = answers
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        raw = read_body(handler)
        body: Any = json.loads(raw) if raw else None
        path = handler.path.split("?")[0]
        self.requests.append((handler.command, path, dict(handler.headers), body))
        found = self.answers.get(f"{handler.command} {path}")
        if found is None and path == "/predict":
            n = len(body["instances"])
            found = (200, {"model_version": "v", "predictions": [SETOSA] * n})
        status, content = found or (404, {"status": 404, "detail": "Not Found"})
        send_json(handler, status, content)


SETOSA = {
    "label": "setosa",
    "class_index": 0,
    "probabilities": {"setosa": 0.9, "versicolor": 0.075, "virginica": 0.025},
}
LIMITS = {"max_instances": 100, "max_body_bytes": 2**20, "max_train_rows": 1000}


def stub_job(job_id: str, status: str = "succeeded") -> dict[str, Any]:
    return {
        "job_id": job_id,
        "status": status,
        "created_at": "2026-12-02T07:53:22.089393+00:00",
        "progress": {"epoch": 10, "epochs": 10},
        "hyperparameters": {},
        "dataset": {"source": "iris", "rows": 150},
        "activate": True,
    }


JOB_IDS = ["abc1" + "0" * 28, "abc2" + "1" * 28, "def0" + "2" * 28]
VERSIONS = [
    "20261202T075322.089393Z-1a2b3c4d",
    "20261202T081000.000000Z-1a2bffff",
    "20261203T090000.000000Z-9f9f9f9f",
]


@pytest.fixture
def listing_stub() -> Iterator[Recorder]:
    answers: dict[str, tuple[int, Any]] = {
        "GET /train": (200, {"jobs": [stub_job(i) for i in JOB_IDS]}),
        "GET /models": (
            200,
            {
                "current": VERSIONS[0],
                "serving": VERSIONS[0],
                "models": [{"version": v, "active": v == VERSIONS[0]} for v in VERSIONS],
            },
        ),
        "GET /limits": (200, LIMITS),
    }
    for job_id in JOB_IDS:
        answers[f"GET /train/{job_id}"] = (200, stub_job(job_id))
    for version in VERSIONS:
        answers[f"POST /models/{version}/activate"] = (
            200,
            {"current": version, "serving": version},
        )
    with Recorder(answers) as stub:
        yield stub


def stub_env(stub: Recorder, tmp_path: Path) -> dict[str, str | None]:
    return {
        "IRIS_URL": stub.url,
        "IRIS_API_TOKEN": "t",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "FORCE_COLOR": None,
    }


# -- short ids: the rule ------------------------------------------------------------------------


def test_a_unique_prefix_names_one_id_and_an_exact_id_wins() -> None:
    assert resolve("abc1", JOB_IDS, "job id") == JOB_IDS[0]
    assert resolve("ab", ["ab", "abc"], "job id") == "ab"  # an exact id is never ambiguous
    with pytest.raises(ValueError, match=r"job id 'abc' is ambiguous: it could be abc10+, abc21+"):
        resolve("abc", JOB_IDS, "job id")
    with pytest.raises(ValueError, match="no job id starts with '9'"):
        resolve("9", JOB_IDS, "job id")


def test_a_version_is_named_by_a_prefix_of_it_or_of_its_hex_digits() -> None:
    assert resolve("1a2b3", VERSIONS, "model version", keys=True) == VERSIONS[0]
    assert resolve("20261203", VERSIONS, "model version", keys=True) == VERSIONS[2]
    with pytest.raises(ValueError, match="ambiguous"):
        resolve("1a2b", VERSIONS, "model version", keys=True)
    assert short_versions(VERSIONS) == {v: v[-8:] for v in VERSIONS}
    assert short_versions(["v1", "v2"]) == {"v1": "v1", "v2": "v2"}


def test_short_ids_grow_past_eight_characters_until_they_differ() -> None:
    ids = ["a" * 10 + "1" * 22, "a" * 10 + "2" * 22, "b" * 32]
    assert short_ids(ids) == {i: i[:11] for i in ids}
    assert short_ids(JOB_IDS) == {i: i[:8] for i in JOB_IDS}


def test_the_command_line_takes_a_unique_prefix_and_names_the_candidates_otherwise(
    listing_stub: Recorder, tmp_path: Path
) -> None:
    env = stub_env(listing_stub, tmp_path)
    shown = invoke("job", "abc2", "-o", "json", env=env)
    assert shown.exit_code == 0, shown.stderr
    assert json.loads(shown.stdout)["job_id"] == JOB_IDS[1]
    ambiguous = invoke("job", "abc", env=env)
    assert ambiguous.exit_code == 2
    lines = ambiguous.stderr.splitlines()
    assert len(lines) == 1, ambiguous.stderr
    assert "job id 'abc' is ambiguous" in lines[0]
    assert JOB_IDS[0] in lines[0]
    assert JOB_IDS[1] in lines[0]
    none = invoke("cancel", "999", env=env)
    assert none.exit_code == 2
    assert "no job id starts with '999'" in none.stderr
    not_hex = invoke("delete", "xyz", env=env)
    assert not_hex.exit_code == 2
    assert "'xyz' is not a job id" in not_hex.stderr
    activated = invoke("activate", "9f9f", env=env)
    assert activated.exit_code == 0, activated.stderr
    assert activated.stdout == f"now serving {VERSIONS[2]}\n"
    assert ("POST", f"/models/{VERSIONS[2]}/activate") in [r[:2] for r in listing_stub.requests]
    both = invoke("activate", "1a2b", env=env)
    assert both.exit_code == 2
    assert VERSIONS[0] in both.stderr
    assert VERSIONS[1] in both.stderr
    assert not any(r[1].endswith("/cancel") or r[0] == "DELETE" for r in listing_stub.requests)


def test_a_full_id_is_taken_without_a_listing(listing_stub: Recorder, tmp_path: Path) -> None:
    result = invoke("job", JOB_IDS[2], env=stub_env(listing_stub, tmp_path))
    assert result.exit_code == 0, result.stderr
    assert [r[:2] for r in listing_stub.requests] == [("GET", f"/train/{JOB_IDS[2]}")]


# -- predict: the input's columns stay, ours come beside them -----------------------------------


def test_predict_keeps_the_inputs_columns_and_adds_its_own(
    listing_stub: Recorder, tmp_path: Path
) -> None:
    text = (
        "id,Sepal Length (cm),sepal width (cm),petal length (cm),petal width (cm),species,note\n"
        '7,5.1,3.5,1.4,0.2,virginica,"tall, blue"\n'
        "8,6.7,3.0,5.2,2.3,virginica,\n"
    )
    result = invoke("predict", "-", "--format", "csv", env=stub_env(listing_stub, tmp_path),
                    input=text)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == [
        "id", "Sepal Length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)",
        "species", "note", "predicted_species", "p_setosa", "p_versicolor", "p_virginica",
    ]  # fmt: skip
    assert rows[1] == ["7", "5.1", "3.5", "1.4", "0.2", "virginica", "tall, blue",
                       "setosa", "0.9", "0.075", "0.025"]  # fmt: skip
    assert rows[2][:7] == ["8", "6.7", "3.0", "5.2", "2.3", "virginica", ""]
    sent = [body for method, path, _, body in listing_stub.requests if path == "/predict"]
    assert sent[0]["instances"] == [
        {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
        {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3},
    ]


def test_predict_on_its_own_output_never_writes_over_a_column(
    listing_stub: Recorder, tmp_path: Path
) -> None:
    env = stub_env(listing_stub, tmp_path)
    first = invoke("predict", "-", "--format", "csv", env=env, input="5.1,3.5,1.4,0.2\n")
    assert first.exit_code == 0, first.stderr
    again = invoke("predict", "-", "--format", "csv", env=env, input=first.stdout)
    assert again.exit_code == 0, again.stderr
    header = next(csv.reader(io.StringIO(again.stdout)))
    assert header == [
        "sepal_length", "sepal_width", "petal_length", "petal_width",
        "predicted_species", "p_setosa", "p_versicolor", "p_virginica",
        "predicted_species_2", "p_setosa_2", "p_versicolor_2", "p_virginica_2",
    ]  # fmt: skip


def test_a_headerless_csv_is_read_and_its_line_numbers_kept(
    listing_stub: Recorder, tmp_path: Path
) -> None:
    env = stub_env(listing_stub, tmp_path)
    result = invoke("predict", "-", "--format", "table", env=env,
                    input="# two flowers\n5.1,3.5,1.4,0.2\n\n6.7,3.0,5.2,2.3\n")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert ["2", "setosa", "0.9000", "0.0750", "0.0250"] in lines
    assert ["4", "setosa", "0.9000", "0.0750", "0.0250"] in lines
    bad = invoke("predict", "-", env=env, input="5.1,3.5,1.4,0.2\n5.1,3.5,x,0.2\n")
    assert bad.exit_code == 2
    assert "<stdin> line 2: petal_length 'x' is not a number" in bad.stderr


# -- login ---------------------------------------------------------------------------------------


def test_login_to_a_server_without_a_token_check_saves_it_unverified(tmp_path: Path) -> None:
    with Recorder({"GET /healthz": (200, {"status": "ok"})}) as stub:
        env = {"XDG_CONFIG_HOME": str(tmp_path), "IRIS_URL": None, "IRIS_API_TOKEN": None}
        result = invoke("login", stub.url, env=env, input="s3cret\n")
    assert result.exit_code == 0, result.stderr
    assert "token not verified" in result.stdout
    assert json.loads((tmp_path / "iris" / "config.json").read_text())["token"] == "s3cret"


def test_login_never_takes_the_token_from_the_command_line(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path), "IRIS_URL": None, "IRIS_API_TOKEN": None}
    result = invoke("--token", "s3cret", "login", "http://127.0.0.1:1", env=env)
    assert result.exit_code == 2
    assert "not from --token" in result.stderr
    assert not (tmp_path / "iris").exists()


def test_a_saved_login_others_can_read_is_refused(tmp_path: Path) -> None:
    (tmp_path / "iris").mkdir(mode=0o700)
    path = tmp_path / "iris" / "config.json"
    path.write_text(json.dumps({"url": "http://127.0.0.1:1", "token": "t"}))
    path.chmod(0o644)
    env = {"XDG_CONFIG_HOME": str(tmp_path), "IRIS_URL": None, "IRIS_API_TOKEN": None}
    result = invoke("jobs", env=env)
    assert result.exit_code == 2
    assert "accessible by group or others (mode 0644)" in result.stderr


def test_a_saved_token_is_never_sent_to_another_url(tmp_path: Path) -> None:
    with Recorder({"GET /healthz": (200, {"status": "ok"})}) as saved, Recorder({}) as other:
        env = {"XDG_CONFIG_HOME": str(tmp_path), "IRIS_URL": None, "IRIS_API_TOKEN": None}
        assert invoke("login", saved.url, env=env, input="s3cret\n").exit_code == 0
        refused = invoke("--url", other.url, "cancel", "0" * 32, env=env)
        used = invoke("cancel", "1" * 32, env=env)  # the saved URL, with its token
    assert refused.exit_code == 2
    assert [r[2].get("Authorization") for r in other.requests] == [None]
    assert used.exit_code == 2  # the stub has no such job
    assert saved.requests[-1][2].get("Authorization") == "Bearer s3cret"


# -- shell completion ----------------------------------------------------------------------------


def complete(words: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = env | {
        "_IRIS_COMPLETE": "bash_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split(" ")) - 1),
    }
    return subprocess.run(
        [iris_script()], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def test_completion_offers_nothing_quickly_when_the_server_is_away(tmp_path: Path) -> None:
    env = clean_env(tmp_path, IRIS_URL=f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    result = complete("iris job ", env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
    assert result.stderr == ""
    assert time.monotonic() - started < 10  # a bound, not speed: it gives up, never hangs


def test_completion_offers_job_ids_and_versions_from_the_server(
    listing_stub: Recorder, tmp_path: Path
) -> None:
    env = clean_env(tmp_path, IRIS_URL=listing_stub.url)
    jobs = complete("iris cancel abc", env)
    assert jobs.stdout.split() == [f"plain,{JOB_IDS[0]}", f"plain,{JOB_IDS[1]}"]
    versions = complete("iris activate 9f", env)
    assert versions.stdout.split() == [f"plain,{VERSIONS[2]}"]
    option = complete("iris predict x.csv --model-version 2026120", env)
    assert option.stdout.split() == [f"plain,{v}" for v in VERSIONS]


# -- against a real server -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with client_server(tmp_path_factory.mktemp("terminal")) as started:
        wait_idle(started)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=started.url, headers=auth, timeout=30) as http:
            for hyperparameters in (
                {"epochs": 30, "validation_fraction": 0.2, "seed": 3},
                {"epochs": 20, "hidden_units": 12},
            ):
                job_id = http.post("/train", json={"hyperparameters": hyperparameters}).json()
                wait_idle(started)
                assert http.get(f"/train/{job_id['job_id']}").json()["status"] == "succeeded"
        yield started


def server_json(server: ServerProcess, path: str) -> Any:
    with server.client() as http:
        return http.get(path).json()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "headers", "ids"),
    [
        ("jobs", JOB_HEADERS, lambda s: [j["job_id"] for j in server_json(s, "/train")["jobs"]]),
        (
            "models",
            MODEL_HEADERS,
            lambda s: [m["version"] for m in server_json(s, "/models")["models"]],
        ),
    ],
)
def test_listings_fit_80_columns_in_a_terminal_with_every_header_whole(
    server: ServerProcess,
    tmp_path: Path,
    command: str,
    headers: list[str],
    ids: Callable[[ServerProcess], list[str]],
) -> None:
    env = clean_env(tmp_path, IRIS_URL=server.url, TZ=ZONE)
    shown = in_terminal([command], env).rstrip("\n").splitlines()
    assert max(len(line) for line in shown) <= 80, "\n".join(shown)
    assert re.split(r"\s{2,}", shown[0].strip()) == headers
    listed = ids(server)
    rows, notes = shown[1 : 1 + len(listed)], shown[1 + len(listed) :]
    assert all(re.match(r"[0-9a-f]{8}: ", note) for note in notes), notes  # errors, if any
    for line, full in zip(rows, listed, strict=True):
        short = full[:8] if command == "jobs" else full[-8:]
        assert line.startswith(f"{short}  "), line
        assert full not in line
        assert re.search(r"  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d EST(  |$)", line)  # local, zoned


@pytest.mark.slow
def test_wide_shows_every_column_with_full_ids_and_local_times(
    server: ServerProcess, tmp_path: Path
) -> None:
    env = clean_env(tmp_path, IRIS_URL=server.url, TZ=ZONE)
    shown = in_terminal(["models", "-o", "wide"], env).splitlines()
    assert re.split(r"\s{2,}", shown[0].strip()) == [
        "VERSION", "CURRENT", "SERVING", "CREATED", "HIDDEN", "VAL ACC", "TRAIN ACC", "JOB",
        "NOTE", "ERROR",
    ]  # fmt: skip
    newest = server_json(server, "/models")["models"][0]
    created = datetime.fromisoformat(newest["created_at"]) - timedelta(hours=5)
    assert shown[1].startswith(newest["version"])
    assert f"{created:%Y-%m-%d %H:%M:%S} EST" in shown[1]
    assert str(newest["hidden_units"]) in shown[1].split()


@pytest.mark.slow
def test_json_and_csv_listings_carry_the_servers_values_exactly(
    server: ServerProcess, tmp_path: Path
) -> None:
    env: dict[str, str | None] = {
        "IRIS_URL": server.url,
        "XDG_CONFIG_HOME": str(tmp_path),
        "IRIS_API_TOKEN": None,
    }
    raw_jobs = server_json(server, "/train")["jobs"]
    jobs = json.loads(invoke("jobs", "-o", "json", env=env).stdout)["jobs"]
    assert [j["job_id"] for j in jobs] == [j["job_id"] for j in raw_jobs]
    for mine, theirs in zip(jobs, raw_jobs, strict=True):
        for key in ("status", "created_at", "started_at", "finished_at", "metrics",
                    "hyperparameters", "model_version"):  # fmt: skip
            assert mine[key] == theirs[key], key
    raw_models = server_json(server, "/models")
    models = json.loads(invoke("models", "-o", "json", env=env).stdout)
    assert models["current"] == raw_models["current"]
    for mine, theirs in zip(models["models"], raw_models["models"], strict=True):
        assert (mine["version"], mine["created_at"]) == (theirs["version"], theirs["created_at"])
        assert mine["metrics"] == theirs["metrics"]
    rows = list(csv.DictReader(io.StringIO(invoke("models", "-o", "csv", env=env).stdout)))
    for row, theirs in zip(rows, raw_models["models"], strict=True):
        assert row["version"] == theirs["version"]
        assert float(row["train_accuracy"]) == theirs["metrics"]["train_accuracy"]  # exact


@pytest.mark.slow
def test_short_ids_from_the_tables_name_the_job_and_the_version(
    server: ServerProcess, tmp_path: Path
) -> None:
    env: dict[str, str | None] = {
        "IRIS_URL": server.url,
        "IRIS_API_TOKEN": TOKEN,
        "XDG_CONFIG_HOME": str(tmp_path),
    }
    newest = server_json(server, "/train")["jobs"][0]
    shown = invoke("job", newest["job_id"][:8], "-o", "json", env=env)
    assert shown.exit_code == 0, shown.stderr
    assert json.loads(shown.stdout)["job_id"] == newest["job_id"]
    versions = [m["version"] for m in server_json(server, "/models")["models"]]
    older = versions[1]
    rolled = invoke("activate", older[-8:], env=env)
    assert rolled.exit_code == 0, rolled.stderr
    assert rolled.stdout == f"now serving {older}\n"
    back = invoke("activate", versions[0][-8:], env=env)
    assert back.exit_code == 0, back.stderr
    unknown = invoke("job", "f" * 31, env=env)
    assert unknown.exit_code == 2
    assert "no job id starts with" in unknown.stderr


@pytest.mark.slow
def test_login_saves_a_private_file_that_later_commands_use(
    server: ServerProcess, tmp_path: Path
) -> None:
    wait_idle(server)
    env: dict[str, str | None] = {
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "IRIS_URL": None,
        "IRIS_API_TOKEN": None,
    }
    wrong = invoke("login", server.url, env=env, input="not-the-token\n")
    assert wrong.exit_code == 2
    assert "refused the token" in wrong.stderr
    assert "HTTP 401" in wrong.stderr
    assert not (tmp_path / "xdg" / "iris" / "config.json").exists()

    result = invoke("login", server.url, env=env, input=f"{TOKEN}\n")
    assert result.exit_code == 0, result.stderr
    assert "token accepted" in result.stdout
    assert TOKEN not in result.stdout + result.stderr
    path = tmp_path / "xdg" / "iris" / "config.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert json.loads(path.read_text()) == {"url": server.url, "token": TOKEN}

    started = invoke("train", "--epochs", "3", "--no-activate", env=env)  # no flag, no env
    assert started.exit_code == 0, started.stderr
    job_id = started.stdout.strip()
    assert invoke("job", job_id[:8], "--follow", env=env).exit_code == 0
    assert invoke("delete", job_id, env=env | {"IRIS_API_TOKEN": "wrong"}).exit_code == 2
    flag = invoke("--token", TOKEN, "delete", job_id, env=env | {"IRIS_API_TOKEN": "wrong"})
    assert flag.exit_code == 0, flag.stderr  # the flag beats the environment

    out = invoke("logout", env=env)
    assert out.exit_code == 0, out.stderr
    assert not path.exists()
    anonymous = invoke("--url", server.url, "train", "--epochs", "3", env=env)
    assert anonymous.exit_code == 2
    assert "HTTP 401" in anonymous.stderr


@pytest.mark.slow
def test_a_piped_follow_prints_progress_lines_before_the_job_ends(
    server: ServerProcess, tmp_path: Path
) -> None:
    wait_idle(server)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in LONG_JOB.items()]
    proc = subprocess.Popen(
        [iris_script(), "train", "--follow", *flags],
        env=clean_env(tmp_path, IRIS_URL=server.url, IRIS_API_TOKEN=TOKEN),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    stderr = proc.stderr
    assert stderr is not None

    def read() -> None:
        for line in stderr:
            lines.put(line)

    reader = threading.Thread(target=read)
    reader.start()
    seen: list[str] = []

    def progressed() -> str | None:
        while not lines.empty():
            seen.append(lines.get())
            if re.search(r" running  epoch [1-9][0-9]*/10000  loss [0-9.]+ .* elapsed ", seen[-1]):
                return seen[-1]
        return None

    try:
        line = wait_for(progressed, JOB_SECONDS + 3 * PROGRESS_SECONDS, "a progress line")
        assert proc.poll() is None, seen  # printed while the job runs
        job_id = server_json(server, "/train")["jobs"][0]["job_id"]
        assert line.startswith(f"job {job_id[:8]} running"), line
        with server.client(headers=server.auth(TOKEN)) as http:
            assert http.post(f"/train/{job_id}/cancel").status_code == 202
        stdout, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        reader.join(10)
    assert proc.returncode == 1
    assert stdout.strip().splitlines()[-1].startswith(f"job {job_id} cancelled")
    assert all(not s.startswith("job ") or "epoch" in s for s in seen)
