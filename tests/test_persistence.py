"""The model store: bit-exact round trips, metadata, verification on load, CURRENT, clean-up
and concurrent writers."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from harness.models import random_model
from model.errors import (
    ChecksumMismatchError,
    CorruptModelError,
    DanglingCurrentError,
    InvalidVersionError,
    ModelInUseError,
    ModelNotFoundError,
    NoCurrentModelError,
    NonFiniteWeightsError,
    ShapeError,
    UnreadableModelError,
)
from model.network import Model, Params
from model.persistence import VERSION_PATTERN, ModelStore
from model.train import Hyperparameters, TrainResult

REPO_ROOT = Path(__file__).resolve().parents[1]


def model_arrays(model: Model) -> dict[str, np.ndarray]:
    return model.params.arrays() | {"mean": model.standardizer.mean, "std": model.standardizer.std}


def tiny_model(hidden: int = 3, seed: int = 0) -> Model:
    return random_model(hidden, seed)


def assert_same_model(actual: Model, expected: Model) -> None:
    a, e = model_arrays(actual), model_arrays(expected)
    for name in e:
        assert a[name].dtype == np.float64, name
        assert a[name].shape == e[name].shape, name
        assert a[name].tobytes() == e[name].tobytes(), name  # bit-exact, -0.0 included


def weights_path(store: ModelStore, version: str) -> Path:
    return store.root / version / "weights.npz"


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def replace_weights(store: ModelStore, version: str, data: bytes) -> None:
    """Write new weights.npz bytes and record their sha256, as a forger (or a bug) would."""
    weights_path(store, version).write_bytes(data)
    meta_path = store.root / version / "model.json"
    metadata = json.loads(meta_path.read_text())
    metadata["weights_sha256"] = hashlib.sha256(data).hexdigest()
    meta_path.write_text(json.dumps(metadata))


def stored_arrays(store: ModelStore, version: str) -> dict[str, np.ndarray]:
    with np.load(weights_path(store, version)) as npz:
        return {name: npz[name] for name in npz.files}


# -- round trip and metadata ----------------------------------------------------------------


def test_load_after_save_returns_identical_params(
    store: ModelStore, trained: TrainResult, small_hyperparameters: Hyperparameters
) -> None:
    version = store.save(trained.model, trained.record(small_hyperparameters))
    assert re.fullmatch(VERSION_PATTERN, version)
    loaded = store.load(version)
    assert loaded.version == version
    assert_same_model(loaded.model, trained.model)


def test_round_trip_keeps_negative_zero_and_extreme_values(store: ModelStore) -> None:
    model = tiny_model()
    special = np.array([[-0.0, 5e-324, -1.7976931348623157e308, 1e-300]])
    params = model.params
    model = Model(
        params=Params(
            W1=np.vstack([special, params.W1[1:]]), b1=params.b1, W2=params.W2, b2=params.b2
        ),
        standardizer=model.standardizer,
    )
    assert_same_model(store.load(store.save(model)).model, model)


def test_metadata_records_the_training_run(
    store: ModelStore, trained: TrainResult, small_hyperparameters: Hyperparameters
) -> None:
    before = datetime.now().astimezone()
    version = store.save(trained.model, trained.record(small_hyperparameters))
    after = datetime.now().astimezone()
    metadata = store.load(version).metadata
    assert metadata == json.loads((store.root / version / "model.json").read_text())
    assert metadata["format_version"] == 1
    assert metadata["classes"] == ["setosa", "versicolor", "virginica"]
    assert metadata["features"] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert metadata["hyperparameters"] == small_hyperparameters.to_dict()
    assert metadata["metrics"] == trained.metrics
    assert len(metadata["history"]) == small_hyperparameters.epochs
    assert metadata["history"][0]["epoch"] == 1
    assert metadata["history"][-1]["validation_loss"] == trained.history[-1].validation_loss
    created = datetime.fromisoformat(metadata["created_at"])
    assert created.tzinfo is not None
    assert before <= created <= after
    data = weights_path(store, version).read_bytes()
    assert metadata["weights_sha256"] == hashlib.sha256(data).hexdigest()


def test_weights_file_holds_exactly_the_named_arrays(store: ModelStore) -> None:
    version = store.save(tiny_model(hidden=5))
    arrays = stored_arrays(store, version)
    assert set(arrays) == {"W1", "b1", "W2", "b2", "mean", "std"}
    assert arrays["W1"].shape == (5, 4)
    assert arrays["W2"].shape == (3, 5)


# -- verification on load -------------------------------------------------------------------


def test_flipped_byte_is_a_checksum_mismatch(store: ModelStore) -> None:
    version = store.save(tiny_model())
    path = weights_path(store, version)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match=version):
        store.load(version)


def test_truncated_weights_are_a_checksum_mismatch(store: ModelStore) -> None:
    version = store.save(tiny_model())
    path = weights_path(store, version)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ChecksumMismatchError):
        store.load(version)


@pytest.mark.parametrize("keep", [0, 3, 100, -100, -1])
def test_truncated_weights_with_matching_checksum_are_unreadable(
    store: ModelStore, keep: int
) -> None:
    version = store.save(tiny_model())
    replace_weights(store, version, weights_path(store, version).read_bytes()[:keep])
    with pytest.raises(UnreadableModelError):
        store.load(version)


def test_malformed_zip_with_matching_checksum_is_unreadable(store: ModelStore) -> None:
    version = store.save(tiny_model())
    data = bytearray(weights_path(store, version).read_bytes())
    central = data.find(b"PK\x01\x02")  # first central-directory entry
    data[central + 10 : central + 12] = (99).to_bytes(2, "little")  # unknown compression method
    replace_weights(store, version, bytes(data))
    with pytest.raises(UnreadableModelError):
        store.load(version)


def test_pickled_object_array_is_refused_without_unpickling(store: ModelStore) -> None:
    version = store.save(tiny_model())
    arrays: dict[str, np.ndarray] = stored_arrays(store, version)
    arrays["W1"] = np.array([object()] * 12, dtype=object).reshape(3, 4)
    replace_weights(store, version, npz_bytes(**arrays))
    with pytest.raises(UnreadableModelError):
        store.load(version)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("b1", np.zeros(4)),  # hidden 3 elsewhere
        ("W2", np.zeros((3, 4))),
        ("b2", np.zeros(2)),
        ("mean", np.zeros(5)),
        ("std", np.ones((1, 4))),
        ("W1", np.zeros(12)),
        ("W1", np.zeros((0, 4))),
        ("W1", np.zeros((3, 4), dtype=np.float32)),
        ("b2", np.zeros(3, dtype=np.int64)),
    ],
)
def test_wrong_shape_or_dtype_is_a_shape_error(
    store: ModelStore, name: str, value: np.ndarray
) -> None:
    version = store.save(tiny_model(hidden=3))
    arrays = stored_arrays(store, version) | {name: value}
    replace_weights(store, version, npz_bytes(**arrays))
    with pytest.raises(ShapeError, match=name):
        store.load(version)


def test_missing_or_extra_array_is_a_shape_error(store: ModelStore) -> None:
    version = store.save(tiny_model())
    arrays = stored_arrays(store, version)
    del arrays["b2"]
    replace_weights(store, version, npz_bytes(**arrays))
    with pytest.raises(ShapeError, match="b2"):
        store.load(version)
    arrays = stored_arrays(store, version) | {"b2": np.zeros(3), "extra": np.zeros(1)}
    replace_weights(store, version, npz_bytes(**arrays))
    with pytest.raises(ShapeError, match="extra"):
        store.load(version)


def test_hidden_units_disagreeing_with_metadata_is_a_shape_error(store: ModelStore) -> None:
    version = store.save(tiny_model(hidden=3))
    replace_weights(
        store, version, weights_path(store, store.save(tiny_model(hidden=4))).read_bytes()
    )
    with pytest.raises(ShapeError, match="hidden_units"):
        store.load(version)


@pytest.mark.parametrize(
    ("name", "index", "value"),
    [
        ("W1", (1, 2), np.nan),
        ("b1", (0,), np.inf),
        ("W2", (2, 0), -np.inf),
        ("b2", (1,), np.nan),
        ("mean", (3,), np.nan),
        ("std", (0,), np.inf),
        ("std", (2,), 0.0),
        ("std", (1,), -1.0),
    ],
)
def test_non_finite_weight_is_refused(
    store: ModelStore, name: str, index: tuple[int, ...], value: float
) -> None:
    version = store.save(tiny_model())
    arrays = stored_arrays(store, version)
    arrays[name][index] = value
    replace_weights(store, version, npz_bytes(**arrays))
    with pytest.raises(NonFiniteWeightsError, match=name):
        store.load(version)


def test_unreadable_metadata_is_refused(store: ModelStore) -> None:
    version = store.save(tiny_model())
    meta_path = store.root / version / "model.json"
    meta_path.write_text("{not json")
    with pytest.raises(UnreadableModelError):
        store.load(version)
    meta_path.write_text(json.dumps({"format_version": 99, "weights_sha256": "0" * 64}))
    with pytest.raises(UnreadableModelError, match="format_version"):
        store.load(version)
    meta_path.unlink()
    with pytest.raises(UnreadableModelError):
        store.load(version)


def test_every_corruption_error_is_a_corrupt_model_error() -> None:
    for error in (ChecksumMismatchError, UnreadableModelError, ShapeError, NonFiniteWeightsError):
        assert issubclass(error, CorruptModelError)


# -- version ids, CURRENT -------------------------------------------------------------------


def test_missing_current_is_no_current_model(store: ModelStore) -> None:
    with pytest.raises(NoCurrentModelError):
        store.current()
    store.save(tiny_model())  # saved, not activated
    with pytest.raises(NoCurrentModelError):
        store.load_current()


@pytest.mark.parametrize(
    "content", ["20991231T235959.999999Z-0123abcd\n", "../elsewhere\n", "", "\xff\xfe"]
)
def test_dangling_current_is_refused(store: ModelStore, content: str) -> None:
    store.save(tiny_model(), activate=True)
    (store.root / "CURRENT").write_bytes(content.encode("latin-1"))
    with pytest.raises(DanglingCurrentError):
        store.current()
    with pytest.raises(DanglingCurrentError):
        store.load_current()


@pytest.mark.parametrize(
    "version",
    [
        "../x",
        "..",
        "",
        "CURRENT",
        "/etc/passwd",
        "a/b",
        "20260101T000000.000000Z-0123abcd/..",
        "20260101T000000.000000Z-0123ABCD",
        " 20260101T000000.000000Z-0123abcd",
    ],
)
def test_version_that_is_not_an_id_is_refused(store: ModelStore, version: str) -> None:
    store.save(tiny_model())
    with pytest.raises(InvalidVersionError):
        store.load(version)
    with pytest.raises(InvalidVersionError):
        store.metadata(version)
    with pytest.raises(InvalidVersionError):
        store.activate(version)


def test_unknown_version_is_model_not_found(store: ModelStore) -> None:
    store.save(tiny_model(), activate=True)
    unknown = "20260101T000000.000000Z-0123abcd"
    with pytest.raises(ModelNotFoundError, match=unknown):
        store.load(unknown)
    with pytest.raises(ModelNotFoundError):
        store.activate(unknown)


def test_versions_sort_by_creation(store: ModelStore) -> None:
    assert store.versions() == []
    saved = [store.save(tiny_model(seed=i)) for i in range(4)]
    assert store.versions() == saved
    assert saved == sorted(saved)
    assert len(set(saved)) == 4


def test_versions_ignore_other_entries(store: ModelStore) -> None:
    version = store.save(tiny_model(), activate=True)
    (store.root / ".tmp-1-deadbeef").mkdir()
    (store.root / "notes.txt").write_text("x")
    assert store.versions() == [version]


def test_activate_rolls_back_and_forward(store: ModelStore) -> None:
    first_model, second_model = tiny_model(seed=1), tiny_model(seed=2)
    first = store.save(first_model, activate=True)
    assert store.current() == first
    second = store.save(second_model, activate=True)
    assert store.current() == second
    store.activate(first)
    assert store.current() == first
    assert_same_model(store.load_current().model, first_model)
    store.activate(second)
    assert store.load_current().version == second
    assert_same_model(store.load_current().model, second_model)


def test_save_without_activate_leaves_current_alone(store: ModelStore) -> None:
    first = store.save(tiny_model(seed=1), activate=True)
    store.save(tiny_model(seed=2))
    assert store.current() == first


def test_activate_refuses_a_corrupt_version_and_keeps_current(store: ModelStore) -> None:
    good = store.save(tiny_model(seed=1), activate=True)
    bad = store.save(tiny_model(seed=2))
    path = weights_path(store, bad)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    before = (store.root / "CURRENT").read_bytes()
    with pytest.raises(ChecksumMismatchError):
        store.activate(bad)
    assert (store.root / "CURRENT").read_bytes() == before
    assert store.current() == good
    assert not [p for p in store.root.iterdir() if p.name.startswith(".tmp-")]


# -- deletion -------------------------------------------------------------------------------


def test_delete_removes_a_version_and_its_files(store: ModelStore) -> None:
    current = store.save(tiny_model(seed=1), activate=True)
    doomed = store.save(tiny_model(seed=2), {"metrics": {"x": 1}})
    store.summary(doomed)  # cached
    store.delete(doomed)
    assert store.versions() == [current]
    assert not (store.root / doomed).exists()
    assert not [p for p in store.root.iterdir() if p.name.startswith(".tmp-")]
    for read in (store.load, store.metadata, store.summary, store.delete, store.activate):
        with pytest.raises(ModelNotFoundError, match=f"no stored model version {doomed}"):
            read(doomed)
    assert store.current() == current


def test_delete_refuses_the_current_version(store: ModelStore) -> None:
    older = store.save(tiny_model(seed=1), activate=True)
    current = store.save(tiny_model(seed=2), activate=True)
    with pytest.raises(ModelInUseError, match=f"version {current} is the current version"):
        store.delete(current)
    assert store.load_current().version == current
    store.delete(older)  # once active, now not: it may go
    assert store.versions() == [current]
    with pytest.raises(InvalidVersionError):
        store.delete("../CURRENT")


def race(
    calls: list[tuple[Callable[[str], None], type[Exception]]], version: str
) -> list[Exception]:
    """Run each call on ``version`` at once, one thread each; the refusals they raised."""
    start = threading.Barrier(len(calls))
    refused: list[Exception] = []

    def attempt(call: Callable[[str], None], refusal: type[Exception]) -> None:
        start.wait()
        try:
            call(version)
        except refusal as error:
            refused.append(error)

    threads = [threading.Thread(target=attempt, args=pair) for pair in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return refused


def test_an_activation_racing_a_deletion_never_leaves_current_dangling(
    store: ModelStore,
) -> None:
    keep = store.save(tiny_model(seed=1), activate=True)
    for _ in range(30):
        version = store.save(tiny_model(seed=2))
        refused = race(
            [(store.activate, ModelNotFoundError), (store.delete, ModelInUseError)], version
        )
        assert len(refused) == 1, refused  # one of the two went through, the other was refused
        current = store.current()  # raises if CURRENT named a version deleted meanwhile
        if isinstance(refused[0], ModelNotFoundError):  # deleted first
            assert current == keep
            assert version not in store.versions()
        else:  # activated first
            assert current == version
            store.activate(keep)


# -- clean-up of interrupted writes ---------------------------------------------------------


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_clean_removes_leftovers_of_dead_processes_only(store: ModelStore) -> None:
    store.save(tiny_model(), activate=True)
    gone = dead_pid()
    dead_dir = store.root / f".tmp-{gone}-0badc0de"
    dead_dir.mkdir()
    (dead_dir / "weights.npz").write_bytes(b"half a model")
    dead_file = store.root / f".tmp-{gone}-0badc0de.current"
    dead_file.write_text("half a pointer")
    live_dir = store.root / f".tmp-{os.getpid()}-5afe5afe"
    live_dir.mkdir()
    parent_dir = store.root / f".tmp-{os.getppid()}-5afe5afe"
    parent_dir.mkdir()

    removed = store.clean()

    assert sorted(removed) == sorted([dead_dir.name, dead_file.name])
    assert not dead_dir.exists()
    assert not dead_file.exists()
    assert live_dir.is_dir()
    assert parent_dir.is_dir()
    assert len(store.versions()) == 1
    store.load_current()


def test_clean_on_a_missing_store_does_nothing(tmp_path: Path) -> None:
    assert ModelStore(tmp_path / "nowhere").clean() == []


# -- concurrent writers ---------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import numpy as np
    from model.network import Model, Params, Standardizer
    from model.persistence import ModelStore

    root, go, seed = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(seed)
    store = ModelStore(root)
    deadline = time.monotonic() + 30
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.001)
    for _ in range(5):
        hidden = int(rng.integers(1, 9))
        model = Model(
            Params(rng.standard_normal((hidden, 4)), rng.standard_normal(hidden),
                   rng.standard_normal((3, hidden)), rng.standard_normal(3)),
            Standardizer(rng.uniform(1, 6, 4), rng.uniform(0.2, 2, 4)),
        )
        print(store.save(model, {"writer": seed}, activate=True), flush=True)
    """
)


def test_concurrent_saves_never_leave_a_half_written_version(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    go = tmp_path / "go"
    env = os.environ | {"PYTHONPATH": str(REPO_ROOT)}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(store.root), str(go), str(seed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for seed in range(4)
    ]
    go.touch()
    # a reader racing the writers: every listed version and CURRENT must load
    checks = 0
    deadline = time.monotonic() + 60
    while any(w.poll() is None for w in writers) and time.monotonic() < deadline:
        for version in store.versions():
            store.load(version)
        with contextlib.suppress(NoCurrentModelError):  # before the first activation
            store.load_current()
        checks += 1
    outputs = [w.communicate(timeout=60) for w in writers]
    for writer, (_, stderr) in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, stderr
    written = [line for stdout, _ in outputs for line in stdout.split()]

    assert checks > 0
    assert len(written) == 20
    assert len(set(written)) == 20
    assert store.versions() == sorted(written)
    for version in written:
        store.load(version)
    assert store.load_current().version in written
    assert not [p.name for p in store.root.iterdir() if p.name.startswith(".tmp-")]
    assert store.clean() == []


# -- the activation log ---------------------------------------------------------------------


def test_activations_list_each_version_once_at_its_latest_activation(store: ModelStore) -> None:
    a, b = store.save(random_model(seed=1), activate=True), store.save(random_model(seed=2))
    assert store.activations() == [a]
    store.activate(b)
    store.activate(a)
    assert store.activations() == [b, a]
    assert (store.root / "ACTIVATIONS").read_text() == f"{a}\n{b}\n{a}\n"


def test_activations_ignore_a_torn_last_line_and_damaged_lines(store: ModelStore) -> None:
    a = store.save(random_model(seed=1), activate=True)
    b = store.save(random_model(seed=2))
    with open(store.root / "ACTIVATIONS", "a") as log:
        log.write("not a version\n" + b[:10])  # a damaged line, then a write torn mid-id
    assert store.activations() == [a]
    store.activate(b)  # the torn line is closed, so this one reads back whole
    assert store.activations() == [a, b]


def test_summary_is_the_metadata_without_history(store: ModelStore) -> None:
    version = store.save(random_model(seed=1), {"history": [{"epoch": 1}], "metrics": {"x": 1}})
    summary = store.summary(version)
    assert "history" not in summary
    assert summary["metrics"] == {"x": 1}
    assert summary == {k: v for k, v in store.metadata(version).items() if k != "history"}


def test_a_store_from_before_the_activation_log_adopts_its_current_version(
    store: ModelStore,
) -> None:
    a = store.save(random_model(seed=1), activate=True)
    (store.root / "ACTIVATIONS").unlink()  # as written by an older release
    assert store.activations() == []
    assert store.adopt_current() == a
    assert store.activations() == [a]
    assert store.adopt_current() is None  # once only
