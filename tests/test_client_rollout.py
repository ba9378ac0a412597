"""The client's and the ``iris`` command's rollout calls against a real ``iris-serve``: the
routing (canary, shadow, its history), feedback, monitoring.

Each test makes the versions it routes to (harness.models: a random model, poor at Iris; or
a copy of stable's weights, exactly as good), so that no counts or paired feedback of an
earlier test reach its figures. Expected figures come from predictions the test asks for
itself, never from the output under test.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from iris_client import (
    AsyncIrisClient,
    Canary,
    ConflictError,
    InputError,
    IrisClient,
    Monitoring,
    RetryPolicy,
    ValidationError,
)
from iris_client.cli import cli

from harness.api import ready_version, serves
from harness.clients import (
    MAX_INSTANCES,
    TOKEN,
    client_server,
    flowers,
    one_line_error,
    species_of,
    write_csv,
)
from harness.models import random_model
from harness.servers import ServerProcess, free_port, wait_for
from model.data import CLASSES, FEATURES, load_iris
from model.persistence import ModelStore

pytestmark = pytest.mark.slow
FAST_RETRY = RetryPolicy(attempts=4, base=0.01, cap=0.05)
COUNT_SECONDS = 10.0  # counts are flushed every 0.5 s: a bound, far above it


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with client_server(tmp_path_factory.mktemp("rollout")) as started:
        yield started


@pytest.fixture(autouse=True)
def no_saved_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A login saved by ``iris login`` on this machine never reaches these tests."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture
def iris(server: ServerProcess) -> Iterator[IrisClient]:
    """A client with the token; every test starts with neither canary nor shadow."""
    with IrisClient(server.url, token=TOKEN, retry=FAST_RETRY) as client:
        client.clear_routing()
        yield client


@pytest.fixture
def run(server: ServerProcess, iris: IrisClient) -> Any:
    """``run(*args, env=...)``: the CLI in-process, pointed at the server."""

    def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
        base = {"IRIS_URL": server.url, "IRIS_API_TOKEN": TOKEN, "FORCE_COLOR": None}
        return CliRunner().invoke(cli, list(args), env=base | (env or {}))

    return invoke


def random_version(server: ServerProcess, seed: int) -> str:
    """A new stored version with random weights (far worse than stable at Iris)."""
    return ModelStore(server.data_dir / "models").save(random_model(4, seed=seed))


def copy_of_stable(server: ServerProcess) -> str:
    """A new stored version with stable's weights: the same predictions, a new name."""
    store = ModelStore(server.data_dir / "models")
    return store.save(store.load(ready_version(server)).model)


def labelled_iris(path: Path) -> tuple[Path, list[list[float]], list[str]]:
    """The shipped Iris data as a labelled CSV (150 rows: three requests of 50)."""
    data = load_iris()
    rows = data.raw.tolist()
    species = [CLASSES[i] for i in data.y]
    return write_csv(path, data.raw, species), rows, species


def correct(iris: IrisClient, rows: list[list[float]], species: list[str], version: str) -> int:
    """How many of the rows ``version`` predicts as their species, asked by the test."""
    labels = iris.predict(rows, model_version=version).labels
    return sum(label == truth for label, truth in zip(labels, species, strict=True))


def served_reaches(iris: IrisClient, version: str, count: int) -> Monitoring:
    """/monitoring once it shows ``count`` rows served by ``version`` (counts are flushed
    every IRIS_MONITOR_FLUSH_SECONDS); fails if it passes ``count`` or the deadline."""

    def probe() -> Monitoring | None:
        found = iris.monitoring()
        figures = found.versions.get(version)
        served = figures.served if figures else 0
        assert served <= count, f"{version} served {served} rows, more than {count}"
        return found if served == count else None

    return wait_for(probe, COUNT_SECONDS, f"{count} rows served by {version}", interval=0.1)


def table_row(stdout: str, first: str) -> list[str]:
    """The cells of the table line that starts with ``first``."""
    for line in stdout.splitlines():
        if line.startswith(first):
            return line.split()
    raise AssertionError(f"no line starting with {first!r} in:\n{stdout}")


def assert_fits(stdout: str, width: int = 80) -> None:
    for line in stdout.splitlines():
        assert len(line) <= width, f"{len(line)} columns: {line!r}"
        assert line == line.rstrip(), f"trailing spaces: {line!r}"


# -- the routing --------------------------------------------------------------------------------


def test_routing_set_show_and_clear_round_trip(
    server: ServerProcess, iris: IrisClient, run: Any
) -> None:
    stable = ready_version(server)
    canary, shadow = random_version(server, 1), random_version(server, 2)
    result = run("routing", "set", "--canary", canary[-8:], "--weight", "0.25",
                 "--promote-after", "100", "--max-accuracy-drop", "0.02",
                 "--shadow", shadow)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert_fits(result.stdout)
    assert re.search(rf"^canary +{canary}$", result.stdout, re.M), result.stdout
    assert re.search(rf"^shadow +{shadow}$", result.stdout, re.M), result.stdout
    assert "weight 0.25: 25% of the requests that name no version" in result.stdout
    assert "rule: after 100 feedback labels" in result.stdout
    assert "less 0.02" in result.stdout

    shown = json.loads(run("routing", "--json").stdout)
    assert shown["stable"] == stable
    assert shown["canary"] == {"version": canary, "weight": 0.25, "promote_after": 100,
                               "max_accuracy_drop": 0.02}  # fmt: skip
    assert shown["shadow"] == {"version": shadow}
    found = iris.routing()
    assert (found.stable, found.canary, found.shadow) == (
        stable, Canary(canary, 0.25, 100, 0.02), shadow,
    )  # fmt: skip
    text = run("routing")
    assert text.exit_code == 0
    assert re.search(rf"^stable +{stable}$", text.stdout, re.M), text.stdout
    assert re.search(rf"^revision +{found.revision}$", text.stdout, re.M), text.stdout

    # what is not named stays: removing the shadow keeps the canary and its rule
    kept = run("routing", "set", "--no-shadow", "-o", "json")
    assert kept.exit_code == 0, kept.stderr
    assert json.loads(kept.stdout)["canary"] == shown["canary"]
    assert json.loads(kept.stdout)["shadow"] is None

    cleared = run("routing", "clear")
    assert cleared.exit_code == 0, cleared.stderr
    assert cleared.stdout.startswith(f"routing cleared: {stable} answers every request")
    after = iris.routing()
    assert (after.canary, after.shadow, after.revision) == (None, None, found.revision + 2)
    assert "canary    none" in run("routing").stdout

    history = json.loads(run("routing", "history", "--json").stdout)["history"]
    newest = history[-3:]
    assert [e["event"] for e in newest] == ["routing_changed"] * 3
    assert [e["reason"].split(":")[0] for e in newest] == ["set by PUT /routing"] * 3
    assert newest[-1]["reason"] == "set by PUT /routing: no canary, no shadow"
    assert newest[0]["routing"]["canary"]["version"] == canary
    assert newest[-1]["routing"] == {
        "stable": after.stable, "canary": None, "shadow": None, "revision": after.revision
    }  # fmt: skip
    events = iris.routing_history(limit=3)
    assert [e.id for e in events] == [e["id"] for e in newest]
    assert events[0].canary == Canary(canary, 0.25, 100, 0.02)
    assert events[0].shadow == shadow


def test_routing_history_is_a_table_of_80_columns(
    server: ServerProcess, iris: IrisClient, run: Any
) -> None:
    canary = random_version(server, 3)
    iris.set_routing(Canary(canary, 0.5, promote_after=10), shadow=random_version(server, 4))
    result = run("routing", "history")
    assert result.exit_code == 0, result.stderr
    assert_fits(result.stdout)
    assert re.split(r"\s{2,}", result.stdout.splitlines()[0].strip()) == ["TIME", "EVENT", "REASON"]
    assert "routing_changed" in result.stdout
    said = " ".join(result.stdout.split())  # the reason wraps within its column
    assert f"canary {canary} at weight 0.5, promoted or rolled back after 10" in said
    assert "then:" not in said  # a routing change's reason says the routing it set
    limited = json.loads(run("routing", "history", "--limit", "1", "-o", "json").stdout)
    assert len(limited["history"]) == 1
    assert limited["history"][0]["routing"]["canary"]["version"] == canary


def test_a_change_from_a_stale_revision_is_a_conflict(
    server: ServerProcess, iris: IrisClient
) -> None:
    shadow = random_version(server, 5)
    read = iris.routing()
    changed = iris.set_routing(shadow=shadow, revision=read.revision)
    assert changed.shadow == shadow
    assert changed.revision == read.revision + 1
    with pytest.raises(ConflictError, match="the routing changed meanwhile"):
        iris.set_routing(revision=read.revision)
    assert iris.routing().shadow == shadow  # the stale change changed nothing
    # what routing() answered may be sent back as it is
    again = iris.set_routing(changed.canary, changed.shadow, changed.revision)
    assert (again.shadow, again.revision) == (shadow, changed.revision + 1)
    # the raw mappings too
    raw = dict(again.raw)
    assert iris.set_routing(raw["canary"], raw["shadow"], raw["revision"]).shadow == shadow


def test_a_weight_of_1_5_shows_the_servers_422(server: ServerProcess, run: Any) -> None:
    canary = random_version(server, 6)
    result = run("routing", "set", "--canary", canary, "--weight", "1.5")
    assert result.exit_code == 2
    line = one_line_error(result.stderr)
    assert "canary.weight: Input should be less than 1" in line
    assert "(HTTP 422" in line
    stable = run("routing", "set", "--canary", ready_version(server), "--weight", "0.5")
    assert stable.exit_code == 2
    assert "is the stable version" in one_line_error(stable.stderr)
    alone = run("routing", "set", "--weight", "0.5")
    assert alone.exit_code == 2
    assert "give --canary VERSION too" in one_line_error(alone.stderr)
    nothing = run("routing", "set")
    assert nothing.exit_code == 2
    assert "nothing to set" in one_line_error(nothing.stderr)
    assert run("routing", "-o", "json").stdout.count('"canary": null') == 1


def test_a_wrong_token_is_refused_with_the_401_line(
    server: ServerProcess, iris: IrisClient, run: Any, tmp_path: Path
) -> None:
    shadow = random_version(server, 7)
    wrong = {"IRIS_API_TOKEN": "wrong"}
    for args in (
        ("routing", "set", "--shadow", shadow),
        ("routing", "clear"),
        ("feedback", str(labelled_iris(tmp_path / "iris.csv")[0])),
    ):
        result = run(*args, env=wrong)
        assert result.exit_code == 2, (args, result.stdout)
        line = one_line_error(result.stderr)
        assert "HTTP 401" in line, args
        assert "pass --token or set IRIS_API_TOKEN" in line, args
    assert iris.routing().shadow is None


# -- feedback -----------------------------------------------------------------------------------


def test_feedback_prints_the_accuracy_the_versions_predictions_give(
    server: ServerProcess, iris: IrisClient, run: Any, tmp_path: Path
) -> None:
    path, rows, species = labelled_iris(tmp_path / "iris.csv")
    stable = ready_version(server)
    before = iris.monitoring().versions[stable].feedback.count
    result = run("feedback", str(path))
    assert result.exit_code == 0, result.stderr
    assert_fits(result.stdout)
    right = correct(iris, rows, species, stable)
    assert right < len(rows)  # the check below could fail
    assert table_row(result.stdout, stable) == [
        stable, str(len(rows)), str(right), f"{right / len(rows):.4f}"
    ]  # fmt: skip
    assert re.split(r"\s{2,}", result.stdout.splitlines()[0].strip()) == [
        "VERSION", "ROWS", "CORRECT", "ACCURACY"
    ]  # fmt: skip
    as_json = json.loads(run("feedback", str(path), "--json").stdout)
    assert as_json == {
        "versions": [{"model_version": stable, "rows": 150, "correct": right,
                      "accuracy": right / 150, "decision": None}]
    }  # fmt: skip
    # written before the answers: counted at once, by the server, over both runs
    figures = iris.monitoring().versions[stable].feedback
    assert figures.count == before + 300


def test_feedback_pinned_to_a_version_and_by_routing_key(
    server: ServerProcess, iris: IrisClient, run: Any, tmp_path: Path
) -> None:
    path, rows, species = labelled_iris(tmp_path / "iris.csv")
    canary = random_version(server, 8)
    iris.set_routing(Canary(canary, 0.5))
    pinned = run("feedback", str(path), "--model-version", canary[-8:])
    assert pinned.exit_code == 0, pinned.stderr
    right = correct(iris, rows, species, canary)
    assert table_row(pinned.stdout, canary)[1:] == ["150", str(right), f"{right / 150:.4f}"]
    assert len(pinned.stdout.strip().splitlines()) == 2  # one version, no decision
    # a routing key meets one version: the first of 40 keys (at weight 0.5, all 40 miss the
    # canary with a chance of 2^-40) that meets the canary when the test asks
    row = {"instances": [dict(zip(FEATURES, rows[0], strict=True))]}
    with httpx.Client(base_url=server.url) as http:

        def meets(key: str) -> bool:
            answer = http.post("/predict", json=row, headers={"X-Routing-Key": key})
            return bool(answer.json()["model_version"] == canary)

        key = next(k for k in (f"user-{i}" for i in range(40)) if meets(k))
    keyed = run("feedback", str(path), "--routing-key", key)
    assert keyed.exit_code == 0, keyed.stderr
    assert table_row(keyed.stdout, canary)[1:] == ["150", str(right), f"{right / 150:.4f}"]
    assert ready_version(server) not in keyed.stdout


def test_feedback_groups_rows_by_the_version_that_answered(
    server: ServerProcess, iris: IrisClient, run: Any, tmp_path: Path
) -> None:
    """Without a key every request is routed on its own: 20 requests at weight 0.5 meet
    both versions (all 20 meeting one has a chance of 2^-19), and each version's rows are
    those it answered, as its served count (flushed by the server) shows."""
    n = 20 * MAX_INSTANCES
    path = write_csv(tmp_path / "many.csv", flowers(n, seed=9), species_of(n))
    stable, canary = ready_version(server), random_version(server, 10)
    iris.set_routing(Canary(canary, 0.5))
    result = run("feedback", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    groups = {g["model_version"]: g for g in json.loads(result.stdout)["versions"]}
    assert set(groups) == {stable, canary}
    assert sum(g["rows"] for g in groups.values()) == n
    assert all(g["rows"] % MAX_INSTANCES == 0 for g in groups.values())  # whole requests
    served = served_reaches(iris, canary, groups[canary]["rows"])
    assert served.versions[canary].feedback.count == groups[canary]["rows"]
    assert served.versions[canary].role == "canary"


def test_feedback_prints_the_rules_rollback(
    server: ServerProcess, iris: IrisClient, run: Any, tmp_path: Path
) -> None:
    path, rows, species = labelled_iris(tmp_path / "iris.csv")
    stable, canary = ready_version(server), random_version(server, 11)
    iris.set_routing(Canary(canary, 0.5, promote_after=60, max_accuracy_drop=0.02))
    result = run("feedback", str(path), "--model-version", canary)
    assert result.exit_code == 0, result.stderr
    assert_fits(result.stdout)
    # three requests of 50 labels: the second completes the 60, on its 100 rows
    canary_right = correct(iris, rows[:100], species[:100], canary)
    stable_right = correct(iris, rows[:100], species[:100], stable)
    assert canary_right / 100 < stable_right / 100 - 0.02  # the rule must roll it back
    said = " ".join(result.stdout.split())
    assert (
        f"canary {canary}: rolled back by the rule: on 100 labelled rows the canary was "
        f"right on {canary_right} ({canary_right / 100:.4f}) and stable on {stable_right} "
        f"({stable_right / 100:.4f}); the most it may lose is 0.02"
    ) in said
    assert iris.routing().canary is None
    last = iris.routing_history(limit=1)[0]
    assert (last.event, last.canary) == ("rolled_back", None)
    assert last.figures is not None
    assert last.figures["canary_correct"] == canary_right


def test_feedback_prints_the_rules_promotion(
    server: ServerProcess, iris: IrisClient, run: Any, tmp_path: Path
) -> None:
    path, _, _ = labelled_iris(tmp_path / "iris.csv")
    twin = copy_of_stable(server)  # as right as stable on every row: promoted
    iris.set_routing(Canary(twin, 0.5, promote_after=50))
    result = run("feedback", str(path), "--model-version", twin, "--json")
    assert result.exit_code == 0, result.stderr
    (group,) = json.loads(result.stdout)["versions"]
    assert group["decision"]["event"] == "promoted"
    assert group["decision"]["figures"]["canary"] == twin
    assert serves(server, twin) == twin
    assert iris.routing().stable == twin


def test_the_client_checks_labels_before_sending(iris: IrisClient) -> None:
    version = iris.routing().stable
    assert version is not None
    with pytest.raises(InputError, match="label 1: 'rose' is neither a species"):
        iris.feedback(version, [[5.1, 3.5, 1.4, 0.2]] * 2, ["setosa", "rose"])
    with pytest.raises(InputError, match="1 labels for 2 rows"):
        iris.feedback(version, [[5.1, 3.5, 1.4, 0.2]] * 2, [0])
    with pytest.raises(InputError, match="label 0: True"):
        iris.feedback(version, [[5.1, 3.5, 1.4, 0.2]], [True])
    answer = iris.feedback(version, [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], [0, "virginica"])
    assert (answer.model_version, answer.count, answer.correct) == (version, 2, 2)
    with pytest.raises(ValidationError, match="model_version"):
        iris.feedback("20200101T000000.000000Z-deadbeef", [[5.1, 3.5, 1.4, 0.2]], [0])


def test_a_bad_feedback_csv_exits_2_naming_the_line(run: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    header = ",".join([*FEATURES, "species"])
    bad.write_text(f"{header}\n5.1,3.5,1.4,0.2,setosa\n6.7,3.0,5.2,2.3,rose\n")
    result = run("feedback", str(bad))
    assert result.exit_code == 2
    assert "bad.csv line 3: species 'rose' is not one of" in one_line_error(result.stderr)
    unlabelled = write_csv(tmp_path / "u.csv", flowers(3))
    result = run("feedback", str(unlabelled))
    assert result.exit_code == 2
    assert "the header lacks species" in one_line_error(result.stderr)
    refused = tmp_path / "zero.csv"
    refused.write_text(f"{header}\n5.1,3.5,1.4,0.2,setosa\n0,3.0,5.2,2.3,virginica\n")
    result = run("feedback", str(refused))
    assert result.exit_code == 2
    assert "zero.csv line 3: " in one_line_error(result.stderr)


# -- monitoring ---------------------------------------------------------------------------------


def test_monitor_fits_80_columns_and_its_json_parses(
    server: ServerProcess, iris: IrisClient, run: Any
) -> None:
    stable = ready_version(server)
    canary, shadow = random_version(server, 12), random_version(server, 13)
    iris.set_routing(Canary(canary, 0.25, promote_after=1000), shadow)
    iris.predict(flowers(70, seed=14), model_version=canary)  # two requests: 50 and 20 rows
    iris.feedback(canary, flowers(30, seed=15), species_of(30))
    served_reaches(iris, canary, 70)
    result = run("monitor")
    assert result.exit_code == 0, result.stderr
    assert_fits(result.stdout)
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "VERSION", "ROLE", "SERVED", "FEEDBACK", "ACCURACY", "SHADOWED", "AGREEMENT",
    ]  # fmt: skip
    shown = table_row(result.stdout, canary[-8:])[:5]
    assert table_row(result.stdout, stable[-8:])[1] == "stable"
    assert table_row(result.stdout, shadow[-8:])[1] == "shadow"
    assert re.split(r"\s{2,}", table_row(result.stdout, "FEATURE")[0]) == ["FEATURE"]
    for feature in FEATURES:
        assert table_row(result.stdout, feature)[-1] in ("yes", "no")
    assert "drift of the last " in result.stdout
    assert f"from {stable[-8:]}" in result.stdout

    as_json = json.loads(run("monitor", "--json").stdout)
    assert as_json["versions"][canary]["served"] == 70
    assert as_json["versions"][canary]["feedback"]["count"] == 30
    assert as_json["drift"]["reference"] == stable
    assert set(as_json["drift"]["features"]) == set(FEATURES)
    assert json.loads(run("monitor", "-o", "json").stdout)["versions"].keys() == (
        as_json["versions"].keys()
    )
    # The canary's accuracy, asked of it by the test (last: these predictions count as served).
    accuracy = correct(iris, flowers(30, seed=15), species_of(30), canary) / 30
    assert shown == [canary[-8:], "canary", "70", "30", f"{accuracy:.4f}"]


def test_monitor_watch_draws_again_until_ctrl_c(server: ServerProcess) -> None:
    script = Path(sys.executable).with_name("iris")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRIS_")}
    proc = subprocess.Popen(
        [str(script), "--url", server.url, "monitor", "--watch", "0.2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True)
    reader.start()
    seen: list[str] = []

    def frames() -> int | None:
        while not lines.empty():
            seen.append(lines.get())
        # A frame's head line, then its table: three tables seen, three whole frames drawn.
        found = sum(line.startswith("VERSION ") for line in seen)
        return found if found >= 3 else None

    try:
        wait_for(frames, 20.0, "three frames of iris monitor --watch")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, stderr
    assert sum(line.startswith("every 0.2 s (Ctrl-C stops): ") for line in seen) >= 3
    assert all(len(line.rstrip("\n")) <= 80 for line in seen)


# -- the asyncio client -------------------------------------------------------------------------


def test_the_asyncio_client_has_the_same_calls(server: ServerProcess, iris: IrisClient) -> None:
    canary = random_version(server, 16)
    rows, species = flowers(120, seed=17).tolist(), species_of(120)

    async def main() -> None:
        async with AsyncIrisClient(server.url, token=TOKEN, retry=FAST_RETRY) as aio:
            found = await aio.set_routing({"version": canary, "weight": 0.5}, None)
            assert found.canary == Canary(canary, 0.5)
            assert (await aio.routing()) == found
            batches = await aio.predict_batches(rows, routing_key="same-key")
            assert [len(b) for b in batches] == [50, 50, 20]
            assert len({b.model_version for b in batches}) == 1  # one key, one version
            answer = await aio.feedback(canary, rows, species)
            assert answer.count == 120
            assert answer.correct == correct(iris, rows, species, canary)
            monitoring = await aio.monitoring()
            assert monitoring.versions[canary].feedback.count == 120
            history = await aio.routing_history(limit=1)
            assert history[0].canary == Canary(canary, 0.5)
            with pytest.raises(ConflictError):
                await aio.set_routing(revision=found.revision - 1)
            assert (await aio.clear_routing()).canary is None

    asyncio.run(main())
    pinned = iris.predict_batches(rows, model_version=canary)
    assert {b.model_version for b in pinned} == {canary}


# -- failures -----------------------------------------------------------------------------------


def test_every_new_command_exits_3_when_the_server_is_down(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    path = write_csv(tmp_path / "f.csv", flowers(3), species_of(3))
    version = "20200101T000000.000000Z-deadbeef"
    for args in (
        ("routing",),
        ("routing", "set", "--shadow", version),
        ("routing", "clear"),
        ("routing", "history"),
        ("feedback", str(path)),
        ("monitor",),
    ):
        result = CliRunner().invoke(cli, ["--url", url, "--token", TOKEN, "--timeout", "5", *args])
        assert result.exit_code == 3, (args, result.stdout, result.stderr)
        assert f"cannot reach {url}" in one_line_error(result.stderr), args
