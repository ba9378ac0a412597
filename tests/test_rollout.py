"""The rollout in one process: PSI, routing keys, the rule, the store, and the HTTP API.

docs/rollout.md is the specification. Figures a test expects are computed here from the
stored weights and the rows (NumPy's forward pass), never read back from the service.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from harness.api import AUTH, ROW, assert_problem, instances, make_client
from harness.models import random_model
from harness.servers import wait_for
from model.data import CLASSES, FEATURES, Dataset
from model.errors import StoreUnavailableError, StoreWriteError
from model.network import forward
from model.persistence import ModelStore
from model.reference import feature_psi, input_reference, psi
from service.registry import Registry
from service.rollout.plan import Canary, Shadow, key_point
from service.rollout.rule import judge
from service.rollout.store import Paired, RolloutStore, SqliteConnector
from service.rollout.traffic import Traffic

# -- the mathematics -----------------------------------------------------------------------


def test_psi_is_the_sum_written_out_by_hand() -> None:
    expected = np.array([0.5, 0.25, 0.25])
    actual = np.array([0.25, 0.25, 0.5])
    by_hand = (0.25 - 0.5) * math.log(0.25 / 0.5) + 0 + (0.5 - 0.25) * math.log(0.5 / 0.25)
    assert psi(expected, actual) == pytest.approx(by_hand, rel=1e-15)
    # An empty bin counts as a fraction of 0.0001, not as an infinity.
    floored = (1e-4 - 0.5) * math.log(1e-4 / 0.5) + (0.5 - 0.25) * math.log(0.5 / 0.25) * 2
    assert psi(expected, np.array([0.0, 0.5, 0.5])) == pytest.approx(floored, rel=1e-12)


def test_a_value_on_an_edge_falls_in_the_bin_below() -> None:
    reference = input_reference(np.array([[1.0] * 4, [2.0] * 4, [3.0] * 4, [4.0] * 4]), FEATURES)
    edges = reference["features"]["sepal_length"]["edges"]
    # Deciles of 1, 2, 3, 4 (linear interpolation): 1.3, 1.6, ..., 3.7
    assert edges == pytest.approx([1.3, 1.6, 1.9, 2.2, 2.5, 2.8, 3.1, 3.4, 3.7])
    fractions = reference["features"]["sepal_length"]["fractions"]
    # 1 below the first edge; 2 in (1.9, 2.2]; 3 in (2.8, 3.1]; 4 above the last.
    assert fractions == [0.25, 0, 0, 0.25, 0, 0, 0.25, 0, 0, 0.25]


def test_the_training_rows_score_zero_and_a_shifted_petal_length_is_flagged_alone(
    iris: Dataset,
) -> None:
    reference = input_reference(iris.raw, FEATURES)
    assert feature_psi(reference, iris.raw, FEATURES) == dict.fromkeys(FEATURES, 0.0)
    shifted = iris.raw.copy()
    shifted[:, FEATURES.index("petal_length")] += 2.0
    scores = feature_psi(reference, shifted, FEATURES)
    assert scores["petal_length"] > 0.2
    assert {name for name, score in scores.items() if score > 0} == {"petal_length"}


def test_routing_keys_land_at_fixed_points_spread_evenly() -> None:
    points = [key_point(f"user-{i}".encode()) for i in range(20_000)]
    assert points[:3] == [key_point(f"user-{i}".encode()) for i in range(3)]
    assert all(0 <= p < 1 for p in points)
    share = sum(p < 0.25 for p in points) / len(points)
    assert abs(share - 0.25) < 5 * math.sqrt(0.25 * 0.75 / len(points))


@pytest.mark.parametrize(
    ("canary_correct", "event"),
    [(96, "promoted"), (95, "rolled_back"), (100, "promoted")],
)
def test_the_rule_compares_exact_fractions(canary_correct: int, event: str) -> None:
    # 0.96 >= 0.98 - 0.02 holds exactly; in floats 0.98 - 0.02 is 0.9600000000000001.
    canary = Canary("c", 0.5, promote_after=100, max_accuracy_drop=0.02)
    verdict = judge(canary, "s", Paired(labels=100, correct=canary_correct, stable_correct=98))
    assert verdict is not None
    assert verdict.event == event
    assert verdict.figures["labels"] == 100
    assert verdict.figures["canary_correct"] == canary_correct


def test_the_rule_waits_for_its_labels_and_a_canary_without_one_is_never_judged() -> None:
    canary = Canary("c", 0.5, promote_after=100)
    assert judge(canary, "s", Paired(99, 0, 99)) is None
    assert judge(Canary("c", 0.5), "s", Paired(10_000, 0, 10_000)) is None


# -- the store ----------------------------------------------------------------------------


@pytest.fixture
def rollout(tmp_path: Path) -> RolloutStore:
    store = RolloutStore(SqliteConnector(tmp_path / "monitoring.sqlite3"))
    store.initialize()
    return store


def test_counts_from_several_flushes_add_up(rollout: RolloutStore) -> None:
    rollout.flush({"a": 3, "b": 1}, {"b": (5, 4)}, None, 10)
    rollout.flush({"a": 2}, {"b": (1, 0)}, None, 10)
    rollout.add_feedback("b", 7, 6, ("a", 5))
    rollout.add_feedback("b", 3, 1, ("a", 3))
    counts = rollout.counts()
    assert counts["a"].served == 5
    assert (counts["b"].served, counts["b"].shadowed, counts["b"].agreed) == (1, 6, 4)
    assert (counts["b"].feedback, counts["b"].correct) == (10, 7)
    assert rollout.paired("b", "a") == Paired(labels=10, correct=7, stable_correct=8)
    assert rollout.paired("b", "other") == Paired()


def test_the_window_is_the_newest_rows_in_order(rollout: RolloutStore) -> None:
    rows = np.arange(4 * 30, dtype=np.float64).reshape(30, 4)
    for start in range(0, 30, 7):  # batches of 7, 7, 7, 7, 2
        rollout.flush({}, {}, rows[start : start + 7], 10)
    assert np.array_equal(rollout.window(10), rows[-10:])
    assert np.array_equal(rollout.window(3), rows[-3:])
    assert len(rollout.window(1000)) <= 10 + 7  # older batches were trimmed


def test_a_plan_changes_once_from_a_revision(rollout: RolloutStore) -> None:
    plan = rollout.plan()
    assert (plan.canary, plan.shadow, plan.revision) == (None, None, 0)
    canary = Canary("v1", 0.3, promote_after=5, max_accuracy_drop=0.01)
    results: list[Any] = []
    barrier = threading.Barrier(4)

    def change() -> None:
        barrier.wait()
        results.append(
            rollout.change_plan(canary, Shadow("v2"), revision=0, stable="s", event="e", reason="r")
        )

    threads = [threading.Thread(target=change) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(result is not None for result in results) == 1
    assert rollout.plan().canary == canary
    assert rollout.plan().shadow == Shadow("v2")
    assert rollout.plan().revision == 1
    assert [entry["event"] for entry in rollout.history()] == ["e"]


# -- the HTTP API, in one process ----------------------------------------------------------

FLUSH = {"monitor_flush_seconds": 0.05, "drift_window": 200}


def versions_of(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


def store_version(tmp_path: Path, model: Any, info: dict[str, Any] | None = None) -> str:
    return versions_of(tmp_path).save(model, info or {})


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path, **FLUSH) as client:
        yield client


def stable_of(client: TestClient) -> str:
    stable: str = client.get("/routing").json()["stable"]
    return stable


def put(client: TestClient, body: dict[str, Any], headers: dict[str, str] = AUTH) -> Any:
    return client.put("/routing", json=body, headers=headers)


def test_routing_needs_the_token_and_names_what_is_wrong(
    client: TestClient, tmp_path: Path
) -> None:
    other = store_version(tmp_path, random_model())
    canary = {"version": other, "weight": 0.25}
    assert_problem(put(client, {"canary": canary}, {}), 401, "missing bearer token")
    wrong = {"Authorization": "Bearer nope"}
    assert_problem(put(client, {"canary": canary}, wrong), 401, "invalid bearer token")
    for weight in (0, 1, 1.5, -0.1):
        assert_problem(put(client, {"canary": {**canary, "weight": weight}}), 422, "weight")
    missing = other[:-1] + ("0" if other[-1] != "0" else "1")
    assert_problem(put(client, {"canary": {**canary, "version": missing}}), 422, missing)
    stable = stable_of(client)
    assert_problem(put(client, {"canary": {**canary, "version": stable}}), 422, "stable")
    assert_problem(put(client, {"shadow": {"version": stable}}), 422, "stable")
    assert_problem(put(client, {"canary": {**canary, "extra": 1}}), 422, "extra")
    assert client.get("/routing").json()["revision"] == 0  # nothing was changed

    answer = put(client, {"canary": canary, "revision": 0})
    assert answer.status_code == 200, answer.text
    assert answer.json()["canary"] == canary | {"promote_after": None, "max_accuracy_drop": 0.0}
    assert_problem(put(client, {"revision": 0}), 409, "changed meanwhile")
    # What GET answered can be sent back as it is.
    assert put(client, client.get("/routing").json()).json()["revision"] == 2
    cleared = put(client, {})
    assert cleared.json() | {"revision": 0} == {
        "stable": stable, "canary": None, "shadow": None, "revision": 0
    }  # fmt: skip


def test_a_routed_version_cannot_be_deleted_and_activating_it_makes_it_stable(
    client: TestClient, tmp_path: Path
) -> None:
    canary, shadow = (
        store_version(tmp_path, random_model()),
        store_version(tmp_path, random_model(seed=1)),
    )
    body = {"canary": {"version": canary, "weight": 0.5}, "shadow": {"version": shadow}}
    assert put(client, body).status_code == 200
    assert_problem(client.delete(f"/models/{canary}", headers=AUTH), 409, "canary", "PUT /routing")
    assert_problem(client.delete(f"/models/{shadow}", headers=AUTH), 409, "shadow")
    assert client.post(f"/models/{canary}/activate", headers=AUTH).status_code == 200
    routing = client.get("/routing").json()
    assert routing["stable"] == canary
    assert routing["canary"] is None
    assert routing["shadow"] == {"version": shadow}
    history = client.get("/routing/history").json()["history"]
    assert history[-1]["event"] == "activated"
    assert history[-1]["reason"] == (
        f"{canary} activated by hand (POST /models/{canary}/activate): the canary is stable now"
    )
    assert history[-1]["routing"]["stable"] == canary


def predicted_classes(model: Any, raw: np.ndarray[Any, Any]) -> Any:
    return forward(model.params, model.standardizer.transform(raw)).o_s.argmax(axis=1)


def test_feedback_counts_what_the_version_gets_right(
    client: TestClient, tmp_path: Path, iris: Dataset
) -> None:
    model = random_model(seed=4)
    version = store_version(tmp_path, model)
    rows = instances(iris.raw[:100])
    labels = [CLASSES[k] for k in iris.y[:100]]
    body = {"model_version": version, "instances": rows, "labels": labels}
    assert_problem(client.post("/feedback", json=body), 401, "bearer")
    assert_problem(
        client.post("/feedback", json=body | {"labels": labels[:99]}, headers=AUTH), 422, "99"
    )
    assert_problem(
        client.post("/feedback", json=body | {"model_version": "20990101T000000.000000Z-00000000"},
                    headers=AUTH), 422, "model_version",
    )  # fmt: skip
    answer = client.post("/feedback", json=body, headers=AUTH)
    assert answer.status_code == 200, answer.text
    correct = int(np.count_nonzero(predicted_classes(model, iris.raw[:100]) == iris.y[:100]))
    assert answer.json() == {
        "model_version": version, "count": 100, "correct": correct, "decision": None
    }  # fmt: skip
    figures = client.get("/monitoring").json()["versions"][version]["feedback"]
    assert figures == {"count": 100, "correct": correct, "accuracy": correct / 100}


def test_the_rule_rolls_back_a_bad_canary_and_promotes_a_good_one_once(
    client: TestClient, tmp_path: Path, iris: Dataset
) -> None:
    stable = stable_of(client)
    bad = store_version(tmp_path, random_model(seed=2))
    rule = {"weight": 0.5, "promote_after": 50, "max_accuracy_drop": 0.02}
    assert put(client, {"canary": {"version": bad} | rule}).status_code == 200
    body = {"model_version": bad, "instances": instances(iris.raw[:40]),
            "labels": iris.y[:40].tolist()}  # fmt: skip
    assert client.post("/feedback", json=body, headers=AUTH).json()["decision"] is None
    body = {"model_version": bad, "instances": instances(iris.raw[40:60]),
            "labels": iris.y[40:60].tolist()}  # fmt: skip
    decision = client.post("/feedback", json=body, headers=AUTH).json()["decision"]
    assert decision["event"] == "rolled_back"
    stored = versions_of(tmp_path)
    stable_model = stored.load(stable).model
    expected_stable = int(
        np.count_nonzero(predicted_classes(stable_model, iris.raw[:60]) == iris.y[:60])
    )
    expected_bad = int(
        np.count_nonzero(predicted_classes(stored.load(bad).model, iris.raw[:60]) == iris.y[:60])
    )
    assert decision["figures"]["labels"] == 60
    assert decision["figures"]["stable_correct"] == expected_stable
    assert decision["figures"]["canary_correct"] == expected_bad
    assert client.get("/routing").json()["canary"] is None
    assert client.get("/routing").json()["stable"] == stable

    # The same training as stable's: the same weights, as good on every row.
    good = store_version(tmp_path, stable_model)
    assert put(client, {"canary": {"version": good} | rule}).status_code == 200
    body = {"model_version": good, "instances": instances(iris.raw), "labels": iris.y.tolist()}
    decision = client.post("/feedback", json=body, headers=AUTH).json()["decision"]
    assert decision["event"] == "promoted"
    assert client.get("/routing").json() | {"revision": 0} == {
        "stable": good, "canary": None, "shadow": None, "revision": 0
    }  # fmt: skip
    # More feedback decides nothing again.
    body["model_version"] = good
    assert client.post("/feedback", json=body, headers=AUTH).json()["decision"] is None
    events = [entry["event"] for entry in client.get("/routing/history").json()["history"]]
    assert events == ["routing_changed", "rolled_back", "routing_changed", "promoted"]


def test_predictions_are_counted_and_shadowed_off_the_path(
    client: TestClient, tmp_path: Path, iris: Dataset
) -> None:
    stable = stable_of(client)
    shadow_model = random_model(seed=7)
    shadow = store_version(tmp_path, shadow_model)
    assert put(client, {"shadow": {"version": shadow}}).status_code == 200
    for start in range(0, 150, 30):
        assert (
            client.post(
                "/predict", json={"instances": instances(iris.raw[start : start + 30])}
            ).status_code
            == 200
        )
    assert client.post("/predict", json={"instances": [ROW]}).status_code == 200
    pinned = {"instances": [ROW], "model_version": shadow}
    assert client.post("/predict", json=pinned).json()["model_version"] == shadow

    rows = np.vstack([iris.raw, [list(ROW.values())]])
    stable_model = versions_of(tmp_path).load(stable).model
    agreed = int(
        np.count_nonzero(
            predicted_classes(stable_model, rows) == predicted_classes(shadow_model, rows)
        )
    )

    def figures() -> dict[str, Any] | None:
        versions = client.get("/monitoring").json()["versions"]
        done = versions[shadow]["shadow"] and versions[shadow]["shadow"]["count"] == 151
        return versions if done and versions[stable]["served"] == 151 else None

    versions = wait_for(figures, 10.0, "the counts flushed")
    assert versions[stable]["role"] == "stable"
    assert versions[shadow]["role"] == "shadow"
    assert versions[shadow]["served"] == 1  # the pinned request
    assert versions[shadow]["shadow"] == {
        "count": 151, "agreed": agreed, "agreement": agreed / 151
    }  # fmt: skip


def test_drift_of_the_recent_rows_is_in_monitoring_and_metrics(
    client: TestClient, iris: Dataset
) -> None:
    drift = client.get("/monitoring").json()["drift"]
    assert drift["rows"] == 0
    assert drift["reference_source"] == "training rows"
    assert all(f == {"psi": None, "drifted": False} for f in drift["features"].values())
    shifted = iris.raw.copy()
    shifted[:, FEATURES.index("petal_length")] += 2.0
    for _ in range(2):  # 300 rows, a window of 200
        assert client.post("/predict", json={"instances": instances(shifted)}).status_code == 200

    def full() -> dict[str, Any] | None:
        found = client.get("/monitoring").json()["drift"]
        return found if found["rows"] == 200 else None

    drift = wait_for(full, 10.0, "the window filled")
    expected = feature_psi(
        input_reference(iris.raw, FEATURES), np.vstack([shifted, shifted])[-200:], FEATURES
    )
    for name in FEATURES:
        assert drift["features"][name]["psi"] == pytest.approx(expected[name], abs=1e-12)
    assert [n for n, f in drift["features"].items() if f["drifted"]] == ["petal_length"]

    def gauge() -> str | None:
        text = client.get("/metrics").text
        line = next(
            (
                line
                for line in text.splitlines()
                if line.startswith('iris_drift_psi{feature="petal_length"}')
            ),
            "",
        )
        return line if line and float(line.split()[-1]) > 0.2 else None

    wait_for(gauge, 10.0, "the gauge set")


@pytest.mark.parametrize(
    ("info", "source"),
    [
        ({"data": {"source": "iris", "rows": 150}}, "training rows"),  # before data_sha256
        ({"data": {"source": "request", "rows": 30}, "data_sha256": "0" * 64}, None),
    ],
)
def test_a_version_stored_without_a_reference_gets_one_only_from_known_rows(
    tmp_path: Path, iris: Dataset, info: dict[str, Any], source: str | None
) -> None:
    version = versions_of(tmp_path).save(random_model(seed=9), info, activate=True)
    with make_client(tmp_path, **FLUSH) as client:
        for _ in range(2):
            assert (
                client.post("/predict", json={"instances": instances(iris.raw)}).status_code == 200
            )

        def full() -> dict[str, Any] | None:
            found = client.get("/monitoring").json()["drift"]
            return found if found["rows"] == 200 else None

        drift = wait_for(full, 10.0, "the window filled")
    assert drift["reference"] == version
    assert drift["reference_source"] == source
    if source is None:  # rows it was trained on are not known: no figure rather than a guess
        assert all(f == {"psi": None, "drifted": False} for f in drift["features"].values())
    else:  # Iris rows against the Iris rows
        assert all(f["psi"] is not None and not f["drifted"] for f in drift["features"].values())


def test_a_canary_is_judged_on_its_own_trial_by_its_own_feedback(
    client: TestClient, tmp_path: Path, iris: Dataset
) -> None:
    stable = stable_of(client)
    bad = store_version(tmp_path, random_model(seed=3))
    labelled = {"instances": instances(iris.raw[:60]), "labels": iris.y[:60].tolist()}
    # Feedback before it is the canary, and a rolled-back trial, do not count for a new one.
    assert (
        client.post("/feedback", json={"model_version": bad} | labelled, headers=AUTH).json()[
            "decision"
        ]
        is None
    )
    rule = {"version": bad, "weight": 0.5, "promote_after": 50}
    assert put(client, {"canary": rule}).status_code == 200
    on_stable = client.post("/feedback", json={"model_version": stable} | labelled, headers=AUTH)
    assert on_stable.json()["decision"] is None  # stable's feedback judges no canary
    first = client.post("/feedback", json={"model_version": bad} | labelled, headers=AUTH)
    assert first.json()["decision"]["event"] == "rolled_back"
    assert first.json()["decision"]["figures"]["labels"] == 60
    assert put(client, {"canary": rule}).status_code == 200  # a second trial
    few = {"instances": instances(iris.raw[:10]), "labels": iris.y[:10].tolist()}
    again = client.post("/feedback", json={"model_version": bad} | few, headers=AUTH)
    assert again.json()["decision"] is None
    # A change of weight is the same trial: its labels are kept.
    assert put(client, {"canary": rule | {"weight": 0.3}}).status_code == 200
    rest = client.post("/feedback", json={"model_version": bad} | labelled, headers=AUTH)
    assert rest.json()["decision"]["figures"]["labels"] == 70
    history = client.get("/routing/history").json()["history"]
    assert {entry["routing"]["stable"] for entry in history} == {stable}
    assert history[0]["reason"] == (
        f"set by PUT /routing: canary {bad} at weight 0.5, promoted or rolled back after 50 "
        "feedback labels (max accuracy drop 0)"
    )


def test_a_promotion_written_but_not_carried_out_is_completed_by_the_flusher(
    client: TestClient, tmp_path: Path
) -> None:
    # As if the worker that decided it died between the decision and the activation; this
    # worker's flusher is stopped, and run by hand below, so nothing completes it meanwhile.
    traffic: Traffic = client.app.state.iris.traffic  # type: ignore[attr-defined]
    traffic.stop()
    stable = stable_of(client)
    promoted = store_version(tmp_path, random_model(seed=5))
    rollout = RolloutStore(SqliteConnector(tmp_path / "monitoring.sqlite3"))
    plan = rollout.plan()
    assert rollout.change_plan(
        None, None, revision=plan.revision, stable=promoted, event="promoted", reason="test",
        promoting=promoted,
    ) is not None  # fmt: skip
    assert_problem(client.delete(f"/models/{promoted}", headers=AUTH), 409, "promoted canary")
    assert_problem(client.put("/routing", json={}, headers=AUTH), 409, "being promoted")
    assert stable_of(client) == stable
    traffic.reload()
    traffic.judge()  # one flush's rule step
    assert stable_of(client) == promoted
    assert rollout.plan().promoting is None
    assert versions_of(tmp_path).current() == promoted
    assert traffic.plan.promoting is None  # its plan reloaded: the mark is gone


def test_a_promoted_canary_that_cannot_be_activated_leaves_stable_and_says_why(
    client: TestClient, tmp_path: Path
) -> None:
    stable = stable_of(client)
    gone = store_version(tmp_path, random_model(seed=6))
    rollout = RolloutStore(SqliteConnector(tmp_path / "monitoring.sqlite3"))
    (tmp_path / "models" / gone / "weights.npz").write_bytes(b"damaged")
    plan = rollout.plan()
    rollout.change_plan(
        None, None, revision=plan.revision, stable=gone, event="promoted", reason="test",
        promoting=gone,
    )  # fmt: skip

    def failed() -> list[dict[str, Any]] | None:
        history = client.get("/routing/history").json()["history"]
        return history if history[-1]["event"] == "promotion_failed" else None

    entry = wait_for(failed, 10.0, "the promotion given up")[-1]
    assert entry["reason"].startswith(f"the canary {gone} was promoted but cannot be activated")
    assert str(tmp_path) not in entry["reason"]  # no path of the data directory
    assert entry["routing"]["stable"] == stable
    assert stable_of(client) == stable
    assert rollout.plan().promoting is None


def test_a_canary_that_cannot_be_loaded_sends_its_share_to_stable_until_it_can(
    client: TestClient, tmp_path: Path
) -> None:
    """Its weights damaged when the plan is applied (written to the store directly, past
    PUT's check): every request is answered by stable, none fails; once the file is whole
    again, the next flush loads it and the canary answers its share."""
    traffic: Traffic = client.app.state.iris.traffic  # type: ignore[attr-defined]
    stable = stable_of(client)
    canary = store_version(tmp_path, random_model(seed=7))
    weights = tmp_path / "models" / canary / "weights.npz"
    whole = weights.read_bytes()
    weights.write_bytes(b"damaged")
    rollout = RolloutStore(SqliteConnector(tmp_path / "monitoring.sqlite3"))
    plan = rollout.plan()
    assert rollout.change_plan(
        Canary(canary, 0.99), None, revision=plan.revision, stable=stable,
        event="routing_changed", reason="test",
    ) is not None  # fmt: skip
    wait_for(lambda: traffic.plan.canary is not None or None, 10.0, "the plan applied")
    registry = traffic.registry
    asked: list[str | None] = []
    real_get = registry.get

    def get(version: str | None = None) -> Any:
        if threading.current_thread().name != "iris-flush":  # the flusher may try again
            asked.append(version)
        return real_get(version)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry, "get", get)
        answers = [client.post("/predict", json={"instances": [ROW]}) for _ in range(20)]
    assert [a.status_code for a in answers] == [200] * 20
    assert {a.json()["model_version"] for a in answers} == {stable}
    assert canary not in asked  # no request loads it
    weights.write_bytes(whole)

    def canary_answers() -> bool | None:
        found = client.post("/predict", json={"instances": [ROW]}).json()["model_version"]
        return found == canary or None

    wait_for(canary_answers, 10.0, "the canary loaded at a flush")


class RefusingWrites(RolloutStore):
    """A store whose disk is full: reads work, every flush fails."""

    def flush(self, *args: Any, **kwargs: Any) -> None:
        raise StoreWriteError("record the monitoring counts: database or disk is full")


def test_a_store_that_refuses_writes_still_has_its_routing_followed_and_stop_ends(
    tmp_path: Path, iris: Dataset
) -> None:
    models = versions_of(tmp_path)
    stable = models.save(random_model(seed=1), {}, activate=True)
    canary = models.save(random_model(seed=2), {})
    registry = Registry(models)
    registry.refresh()
    store = RefusingWrites(SqliteConnector(tmp_path / "monitoring.sqlite3"))
    store.initialize()
    traffic = Traffic(store, registry, window=200, flush_seconds=0.05, threshold=0.2)
    traffic.prepare()
    traffic.start()
    try:
        traffic.served(stable, iris.raw[:10], np.zeros(10))
        rollout = RolloutStore(SqliteConnector(tmp_path / "monitoring.sqlite3"))
        plan = rollout.change_plan(
            Canary(canary, 0.5), None, revision=0, stable=stable, event="e", reason="r"
        )
        assert plan is not None
        wait_for(lambda: traffic.plan.canary or None, 5.0, "the plan followed")
        assert traffic.plan == plan
        assert traffic.loaded[canary].version == canary
    finally:
        traffic.stop()  # its last flush fails: logged, and the stop goes on
    assert traffic._served == {stable: 10}  # kept for a flush that never came


def test_a_notification_reloads_what_it_names() -> None:
    from service.main import notified

    calls: list[str] = []

    class Stub:
        def __init__(self, name: str) -> None:
            self.name = name

        def __getattr__(self, method: str) -> Any:
            return lambda: calls.append(f"{self.name}.{method}")

    state: Any = type("S", (), {"registry": Stub("registry"), "traffic": Stub("traffic")})()
    for what in ("routing", "20261206T102432.759282Z-65448dc3", None):
        calls.clear()
        notified(state, what)
        expected = {
            "routing": ["traffic.reload"],
            None: ["registry.refresh", "traffic.reload"],
        }.get(what, ["registry.refresh"])
        assert calls == expected, what

    class Down:
        def reload(self) -> None:
            raise StoreUnavailableError("read the routing: the database is unavailable")

    state.traffic = Down()  # a reconnection while the store is down again: no traceback
    notified(state, None)
