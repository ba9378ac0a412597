"""The ``iris`` command line against a real ``iris-serve``: in-process through click's runner,
and as the installed console script for exit statuses, one-line errors and a dying server."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from click.testing import CliRunner, Result
from iris_client.cli import HYPERPARAMETERS, cli

from harness.api import ready_version, serves, serves_other_than
from harness.clients import (
    JOB_SECONDS,
    LONG_JOB,
    MAX_INSTANCES,
    TOKEN,
    Stub,
    client_server,
    expected_probabilities,
    flowers,
    one_line_error,
    species_of,
    wait_idle,
    wait_running,
    write_csv,
)
from harness.servers import ROOT, ServerProcess, free_port, wait_for
from model.data import CLASSES, FEATURES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with client_server(tmp_path_factory.mktemp("cli")) as started:
        yield started


@pytest.fixture(autouse=True)
def no_saved_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A login saved by ``iris login`` on this machine never reaches these tests."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture
def run(server: ServerProcess) -> Any:
    """``run(*args, input=..., env=...)``: the CLI in-process, pointed at the server."""
    wait_idle(server)

    def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        base = {"IRIS_URL": server.url, "IRIS_API_TOKEN": TOKEN, "FORCE_COLOR": None}
        return CliRunner().invoke(cli, list(args), input=input, env=base | (env or {}))

    return invoke


def script() -> list[str]:
    found = Path(sys.executable).with_name("iris")
    assert found.is_file(), f"no iris console script next to {sys.executable}: pip install -e ."
    return [str(found)]


def run_script(
    *args: str, server: ServerProcess | None = None, token: str | None = TOKEN, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRIS_")}
    if server is not None:
        env["IRIS_URL"] = server.url
    if token is not None:
        env["IRIS_API_TOKEN"] = token
    return subprocess.run(
        [*script(), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def parsed_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


# -- help and start-up ---------------------------------------------------------------------------


def test_help_lists_every_command_and_the_exit_statuses(run: Any) -> None:
    result = run("--help")
    assert result.exit_code == 0
    for command in ("predict", "train", "jobs", "job", "cancel", "delete", "models",
                    "activate", "gradients", "health", "limits", "login", "logout"):  # fmt: skip
        assert f"\n  {command} " in result.stdout
    assert "IRIS_URL" in result.stdout
    assert "IRIS_API_TOKEN" in result.stdout
    assert "3 the server is unreachable" in result.stdout
    assert "_IRIS_COMPLETE=bash_source iris" in result.stdout


def test_iris_help_imports_neither_httpx_nor_rich() -> None:
    code = (
        "import sys\nfrom iris_client.cli import cli\n"
        "code = cli.main(['--help'], standalone_mode=False)\n"
        "print(code, ','.join(m for m in ('httpx', 'rich', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1].strip() == "0"


def test_hyperparameter_flags_match_the_servers_schema(server: ServerProcess) -> None:
    with server.client() as http:
        spec = http.get("/openapi.json").json()
    properties = spec["components"]["schemas"]["HyperparametersIn"]["properties"]
    assert [name for name, *_ in HYPERPARAMETERS] == list(properties)
    for name, kind, default, _ in HYPERPARAMETERS:
        assert properties[name]["default"] == default, name
        assert {"integer": int, "number": float, "boolean": bool}[properties[name]["type"]] is kind


# -- predict -------------------------------------------------------------------------------------


def test_predict_a_big_csv_prints_csv_rows_in_input_order(
    server: ServerProcess, run: Any, tmp_path: Path
) -> None:
    raw = flowers(333, seed=21)  # 7 requests of at most 50 rows
    path = write_csv(tmp_path / "big.csv", raw)
    result = run("predict", str(path))
    assert result.exit_code == 0, result.stderr
    rows = parsed_csv(result.stdout)
    assert len(rows) == 333
    version = ready_version(server)
    expected = expected_probabilities(server, version, raw)
    got = np.array([[float(r[f"p_{c}"]) for c in CLASSES] for r in rows])
    assert (got == expected).all()
    assert [r["predicted_species"] for r in rows] == [CLASSES[i] for i in expected.argmax(axis=1)]
    assert [[float(r[f]) for f in FEATURES] for r in rows] == raw.tolist()


def test_predict_from_stdin_as_json_and_as_a_table(server: ServerProcess, run: Any) -> None:
    text = "sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n"
    result = run("predict", "-", "--format", "json", input=text)
    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["model_version"] == ready_version(server)
    assert [p["label"] for p in answer["predictions"]] == ["setosa", "virginica"]
    table = run("predict", "-", "--format", "table", input=text)
    assert table.exit_code == 0
    assert "setosa" in table.stdout
    assert "virginica" in table.stdout
    assert answer["model_version"] in table.stdout


def test_predict_output_file_format_follows_its_extension(run: Any, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", flowers(60, seed=3))
    assert run("predict", str(path), "--output", str(tmp_path / "out.json")).exit_code == 0
    assert len(json.loads((tmp_path / "out.json").read_text())["predictions"]) == 60
    assert run("predict", str(path), "-o", str(tmp_path / "out.csv")).exit_code == 0
    assert len(parsed_csv((tmp_path / "out.csv").read_text())) == 60


def test_predict_draws_a_progress_bar_on_a_terminal(run: Any, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", flowers(400, seed=8))
    result = run("predict", str(path), "--format", "csv",
                 env={"FORCE_COLOR": "1", "COLUMNS": "200"})  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "predicting" in result.stderr
    assert "400/400" in result.stderr
    assert len(parsed_csv(result.stdout)) == 400  # the bar never reaches stdout


def test_an_older_server_without_limits_gets_a_one_line_warning(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", flowers(3))
    with Stub("old") as stub:
        result = CliRunner().invoke(cli, ["--url", stub.url, "predict", str(path)])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith("iris: warning: ")
    assert "publishes no limits (GET /limits: 404)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert [r["predicted_species"] for r in parsed_csv(result.stdout)] == ["setosa"] * 3


def test_a_bad_csv_line_is_named_and_exits_2(run: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("sepal_length,sepal_width,petal_length,petal_width\n1,2,3,4\n5,6,abc,8\n")
    result = run("predict", str(bad))
    assert result.exit_code == 2
    assert "bad.csv line 3: petal_length 'abc' is not a number" in one_line_error(result.stderr)


def test_a_row_the_server_refuses_is_named_by_its_csv_line(run: Any, tmp_path: Path) -> None:
    raw = flowers(180, seed=4)
    raw[129, 0] = 0.0  # line 131 of the file (after the header), in the third request
    result = run("predict", str(write_csv(tmp_path / "f.csv", raw)))
    assert result.exit_code == 2
    line = one_line_error(result.stderr)
    assert "f.csv line 131: " in line
    assert "instances.129.sepal_length" in line
    assert "(HTTP 422)" in line


def test_gradients_of_a_csv_with_species_as_json(run: Any, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "g.csv", flowers(5, seed=6), species_of(5))
    result = run("gradients", str(path), "--reduction", "none", "--include", "input")
    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.stdout)
    assert len(answer["loss"]) == 5
    assert np.array(answer["gradients"]["W1"]).shape[0] == 5
    assert np.array(answer["input_gradients"]["measurements"]).shape == (5, 4)
    no_labels = run("gradients", str(write_csv(tmp_path / "n.csv", flowers(5))))
    assert no_labels.exit_code == 2
    assert "the header lacks species" in one_line_error(no_labels.stderr)


# -- train, jobs, models -------------------------------------------------------------------------


def test_train_follow_ends_with_the_new_served_version(server: ServerProcess, run: Any) -> None:
    result = run("train", "--epochs", "40", "--validation-fraction", "0.2", "--seed", "5",
                 "--follow")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert " succeeded: version " in last
    assert "is now served" in last
    version = last.split(" version ")[1].split()[0]
    assert serves(server, version) == version


def test_train_follow_draws_a_progress_bar_on_a_terminal(run: Any) -> None:
    result = run("train", "--epochs", "30", "--validation-fraction", "0.2", "--follow",
                 env={"FORCE_COLOR": "1", "COLUMNS": "200"})  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "epoch 30/30" in result.stderr
    assert "val acc" in result.stderr


def test_train_follow_held_back_by_the_quality_gate_exits_1(run: Any) -> None:
    gate = ["--validation-fraction", "0.2", "--min-validation-accuracy", "1.0"]
    result = run("train", "--epochs", "1", "--learning-rate", "0.001", *gate, "--follow",
                 "--format", "json")  # fmt: skip
    assert result.exit_code == 1, result.stderr
    job = json.loads(result.stdout)
    assert job["status"] == "succeeded"
    assert job["activated"] is False
    assert "quality_gate" in job["metrics"]


def test_train_without_follow_prints_the_job_id_and_job_shows_it(
    server: ServerProcess, run: Any, tmp_path: Path
) -> None:
    data = write_csv(tmp_path / "train.csv", flowers(30, seed=7), species_of(30))
    result = run("train", "--data", str(data), "--epochs", "5", "--no-activate")
    assert result.exit_code == 0, result.stderr
    job_id = result.stdout.strip()
    assert len(job_id) == 32
    followed = run("job", job_id, "--follow")
    assert followed.exit_code == 0, followed.stderr
    assert "stored, not activated (--no-activate)" in followed.stdout
    shown = run("job", job_id, "--format", "json")
    job = json.loads(shown.stdout)
    assert job["dataset"] == {"source": "request", "rows": 30}
    assert job["hyperparameters"]["epochs"] == 5
    assert job["hyperparameters"]["hidden_units"] == 4  # the server's default, not sent
    text = run("job", job_id)
    assert text.exit_code == 0
    assert job_id in text.stdout
    assert "succeeded" in text.stdout
    listed = run("jobs", "--limit", "3", "--format", "csv")
    assert job_id in [row["job_id"] for row in parsed_csv(listed.stdout)]
    as_json = run("jobs", "--format", "json")
    assert job_id in [j["job_id"] for j in json.loads(as_json.stdout)["jobs"]]


def test_bad_training_arguments_exit_2_with_one_line(run: Any, tmp_path: Path) -> None:
    refused = run("train", "--epochs", "0")
    assert refused.exit_code == 2
    assert "hyperparameters.epochs" in one_line_error(refused.stderr)
    not_a_number = run("train", "--epochs", "many")
    assert not_a_number.exit_code == 2
    assert "'many' is not a valid integer" in one_line_error(not_a_number.stderr)
    unknown = run("train", "--epoch", "3")
    assert unknown.exit_code == 2
    assert "No such option '--epoch'. Did you mean '--epochs'? (see 'iris train --help')" in (
        one_line_error(unknown.stderr)
    )
    gate = run("train", "--min-validation-accuracy", "0.9")
    assert gate.exit_code == 2
    assert "validation_fraction" in one_line_error(gate.stderr)


def test_cancel_then_delete_a_job(server: ServerProcess, run: Any) -> None:
    with httpx.Client(base_url=server.url, headers=server.auth(TOKEN)) as http:
        job_id = http.post("/train", json={"hyperparameters": LONG_JOB}).json()["job_id"]
    wait_running(server, job_id)
    busy = run("delete", job_id)
    assert busy.exit_code == 2
    assert "HTTP 409" in one_line_error(busy.stderr)
    result = run("cancel", job_id)
    assert result.exit_code == 0, result.stderr
    assert f"job {job_id}" in result.stdout
    followed = run("job", job_id, "--follow")
    assert followed.exit_code == 1
    assert f"job {job_id} cancelled" in followed.stdout
    assert run("delete", job_id).exit_code == 0
    gone = run("job", job_id)
    assert gone.exit_code == 2
    assert "HTTP 404" in one_line_error(gone.stderr)


def test_models_lists_versions_and_activate_rolls_back(server: ServerProcess, run: Any) -> None:
    before = ready_version(server)
    assert run("train", "--epochs", "10", "--follow").exit_code == 0
    after = serves_other_than(server, before)
    listed = parsed_csv(run("models", "--format", "csv").stdout)
    assert [r["version"] for r in listed if r["current"] == "*"] == [after]
    assert {before, after} <= {r["version"] for r in listed}
    result = run("activate", before)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == f"now serving {before}"
    assert serves(server, before) == before
    as_json = json.loads(run("models", "--format", "json").stdout)
    assert as_json["current"] == before
    unknown = run("activate", "20200101T000000.000000Z-deadbeef")
    assert unknown.exit_code == 2
    assert "HTTP 404" in one_line_error(unknown.stderr)


def test_train_note_shows_in_the_job_and_the_models_listings(
    server: ServerProcess, run: Any
) -> None:
    result = run("train", "--epochs", "5", "--no-activate", "--note", "lr sweep, run 3",
                 "--follow", "--format", "json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["note"] == "lr sweep, run 3"
    version = job["model_version"]
    shown = json.loads(run("job", job["job_id"][:8], "-o", "json").stdout)
    assert shown["note"] == "lr sweep, run 3"
    listed = json.loads(run("models", "-o", "json").stdout)["models"]
    entry = next(m for m in listed if m["version"] == version)
    assert (entry["job_id"], entry["note"]) == (job["job_id"], "lr sweep, run 3")
    assert len(entry["data_sha256"]) == 64
    row = next(r for r in parsed_csv(run("models", "-o", "csv").stdout) if r["version"] == version)
    assert (row["job_id"], row["note"]) == (job["job_id"], "lr sweep, run 3")
    assert row["data_sha256"] == entry["data_sha256"]
    wide = run("models", "-o", "wide").stdout.splitlines()
    assert re.split(r"\s{2,}", wide[0].strip())[-3:] == ["JOB", "NOTE", "ERROR"]
    line = next(line for line in wide if line.startswith(version))
    assert job["job_id"] in line
    assert "lr sweep, run 3" in line
    text = run("models", "show", version[-8:])
    assert text.exit_code == 0, text.stderr
    fields = {"version": version, "job_id": job["job_id"], "note": "lr sweep, run 3"}
    for key, value in (fields | {"data_sha256": entry["data_sha256"]}).items():
        assert re.search(rf"^ *{key} +{re.escape(value)} *$", text.stdout, re.M), text.stdout
    detail = json.loads(run("models", "show", version, "-o", "json").stdout)
    assert (detail["version"], detail["job_id"], detail["note"]) == (
        version, job["job_id"], "lr sweep, run 3",
    )  # fmt: skip
    too_long = run("train", "--note", "x" * 201)
    assert too_long.exit_code == 2
    assert "note" in one_line_error(too_long.stderr)
    newline = run("train", "--note", "two\nlines")
    assert newline.exit_code == 2
    assert "control character" in one_line_error(newline.stderr)


def test_models_delete_removes_a_version_and_refuses_the_current_one(
    server: ServerProcess, run: Any
) -> None:
    current = ready_version(server)
    result = run("train", "--epochs", "5", "--no-activate", "--follow", "--format", "json")
    assert result.exit_code == 0, result.stderr
    doomed = json.loads(result.stdout)["model_version"]
    wrong = run("models", "delete", doomed, env={"IRIS_API_TOKEN": "wrong"})
    assert wrong.exit_code == 2
    assert "HTTP 401" in one_line_error(wrong.stderr)
    deleted = run("models", "delete", doomed[-8:])  # a unique prefix; stdin is no terminal
    assert deleted.exit_code == 0, deleted.stderr
    assert deleted.stdout == f"version {doomed} deleted\n"
    assert not (server.data_dir / "models" / doomed).exists()
    listed = parsed_csv(run("models", "--format", "csv").stdout)
    assert doomed not in [r["version"] for r in listed]
    refused = run("models", "delete", current, "--yes")
    assert refused.exit_code == 2
    line = one_line_error(refused.stderr)
    assert "HTTP 409" in line
    assert "current version" in line
    gone = run("models", "delete", doomed)
    assert gone.exit_code == 2
    assert "HTTP 404" in one_line_error(gone.stderr)
    unknown = run("models", "show", "ffffffff")
    assert unknown.exit_code == 2
    assert "no model version starts with 'ffffffff'" in one_line_error(unknown.stderr)


def test_models_delete_asks_on_a_terminal_unless_yes(
    server: ServerProcess, run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import iris_client.cli

    monkeypatch.setattr(iris_client.cli, "on_terminal", lambda: True)
    result = run("train", "--epochs", "5", "--no-activate", "--follow", "--format", "json")
    doomed = json.loads(result.stdout)["model_version"]
    declined = run("models", "delete", doomed, input="n\n")
    assert declined.exit_code == 1
    assert f"Delete model version {doomed}?" in declined.stderr
    assert f"version {doomed} not deleted" in declined.stderr
    assert declined.stdout == ""
    assert (server.data_dir / "models" / doomed).is_dir()
    confirmed = run("models", "delete", doomed, input="y\n")
    assert confirmed.exit_code == 0, confirmed.stderr
    assert not (server.data_dir / "models" / doomed).exists()
    again = run("train", "--epochs", "5", "--no-activate", "--follow", "--format", "json")
    other = json.loads(again.stdout)["model_version"]
    unasked = run("models", "delete", other, "--yes", input="")
    assert unasked.exit_code == 0, unasked.stderr
    assert "Delete model version" not in unasked.stderr


def test_health_and_limits(server: ServerProcess, run: Any) -> None:
    result = run("health")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"ready: serving {ready_version(server)}"
    limits = json.loads(run("limits").stdout)
    assert limits["max_instances"] == MAX_INSTANCES


def test_a_wrong_token_exits_2_naming_the_token(run: Any) -> None:
    result = run("train", "--epochs", "5", env={"IRIS_API_TOKEN": "wrong"})
    assert result.exit_code == 2
    line = one_line_error(result.stderr)
    assert "HTTP 401" in line
    assert "--token or set IRIS_API_TOKEN" in line


# -- the console script: exit statuses, one line, no traceback -----------------------------------


def test_console_script_exit_statuses(server: ServerProcess, tmp_path: Path) -> None:
    wait_idle(server)
    ok = run_script("health", server=server)
    assert ok.returncode == 0, ok.stderr
    held = run_script("train", "--epochs", "1", "--learning-rate", "0.001",
                      "--validation-fraction", "0.2", "--min-validation-accuracy", "1.0",
                      "--follow", server=server)  # fmt: skip
    assert held.returncode == 1, held.stderr
    assert "held back" in held.stdout
    wrong = run_script("train", server=server, token="wrong")
    assert wrong.returncode == 2
    assert "HTTP 401" in one_line_error(wrong.stderr)
    bad = run_script("train", "--epochs", "0", server=server)
    assert bad.returncode == 2
    one_line_error(bad.stderr)
    missing = run_script("predict", str(tmp_path / "missing.csv"), server=server)
    assert missing.returncode == 2
    assert "cannot read" in one_line_error(missing.stderr)
    not_url = run_script("--url", "localhost:1", "health")
    assert not_url.returncode == 2
    assert "--url" in one_line_error(not_url.stderr)
    port = free_port()
    down = run_script("--url", f"http://127.0.0.1:{port}", "health")
    assert down.returncode == 3
    assert f"cannot reach http://127.0.0.1:{port}" in one_line_error(down.stderr)


def test_a_server_that_dies_under_a_followed_job_exits_3(tmp_path: Path) -> None:
    with client_server(tmp_path) as doomed:
        proc = subprocess.Popen(
            [
                *script(),
                "--url",
                doomed.url,
                "--token",
                TOKEN,
                "train",
                "--follow",
                *(f"--{k.replace('_', '-')}={v}" for k, v in LONG_JOB.items()),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            job_id = wait_for(
                lambda: next(iter(latest_jobs(doomed)), None), JOB_SECONDS, "the job started"
            )
            wait_running(doomed, job_id)
            assert proc.poll() is None  # still following
            os.killpg(doomed.pid, signal.SIGKILL)
            started = time.monotonic()
            stdout, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    assert proc.returncode == 3, (stdout, stderr)
    assert time.monotonic() - started < 20  # a bound, not speed: it notices, never hangs
    *progress, error = stderr.strip().splitlines()  # stderr is a pipe: progress lines first
    assert progress
    assert all(line.startswith("job ") and " epoch " in line for line in progress), progress
    assert doomed.url in one_line_error(error)


def latest_jobs(server: ServerProcess) -> list[str]:
    with server.client() as http:
        return [job["job_id"] for job in http.get("/train").json()["jobs"]]
