"""The command line, ``python -m model train|evaluate``, run as a real subprocess."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.data import CLASSES, Dataset
from model.persistence import VERSION_PATTERN, ModelStore

REPO_ROOT = Path(__file__).resolve().parents[1]
FAST = ["--epochs", "20"]


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "model", *args],
        cwd=cwd,
        env=os.environ | {"PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def last_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines, "nothing on stdout"
    value = json.loads(lines[-1])
    assert isinstance(value, dict)
    return value


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "error" in lines[0].lower()
    assert result.stdout == ""
    return lines[0]


def store_in(cwd: Path) -> ModelStore:
    return ModelStore(cwd / "data" / "models")  # the default --data-dir is ./data


def write_csv(path: Path, dataset: Dataset) -> None:
    lines = ["sepal_length,sepal_width,petal_length,petal_width,species"]
    lines += [
        ",".join([*(repr(float(v)) for v in raw), CLASSES[label]])
        for raw, label in zip(dataset.raw, dataset.y, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def trained_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One ``train`` run shared by the tests that only read its output and store."""
    cwd = tmp_path_factory.mktemp("cli")
    return cwd, run(cwd, "train", *FAST)


def copy_of(trained_run: tuple[Path, Any], tmp_path: Path) -> Path:
    """A private copy of the shared run's data directory, for tests that change it."""
    shutil.copytree(trained_run[0] / "data", tmp_path / "data")
    return tmp_path


# -- train ----------------------------------------------------------------------------------


def test_train_prints_progress_on_stderr_and_json_on_stdout(trained_run: Any) -> None:
    _, result = trained_run
    summary = last_json(result)
    assert re.fullmatch(VERSION_PATTERN, summary["version"])
    assert summary["activated"] is True
    assert summary["metrics"]["train_rows"] == 150
    assert 0.5 <= summary["metrics"]["train_accuracy"] <= 1
    assert re.search(r"epoch \d+/20", result.stderr)
    assert "epoch" not in result.stdout


def test_train_stores_and_activates_the_new_version(trained_run: Any) -> None:
    cwd, result = trained_run
    summary = last_json(result)
    store = store_in(cwd)
    assert store.versions() == [summary["version"]]
    assert store.current() == summary["version"]
    metadata = store.load_current().metadata
    assert metadata["hyperparameters"]["epochs"] == 20
    assert metadata["metrics"] == summary["metrics"]


def test_train_no_activate_leaves_current_absent(tmp_path: Path) -> None:
    result = run(tmp_path, "train", *FAST, "--no-activate", "--quiet")
    summary = last_json(result)
    assert result.stderr == ""  # --quiet
    store = store_in(tmp_path)
    assert summary["activated"] is False
    assert not (store.root / "CURRENT").exists()
    assert store.versions() == [summary["version"]]


def test_train_no_activate_leaves_current_unchanged(trained_run: Any, tmp_path: Path) -> None:
    cwd = copy_of(trained_run, tmp_path)
    store = store_in(cwd)
    before = store.current()
    summary = last_json(run(cwd, "train", *FAST, "--no-activate", "--seed", "1"))
    assert store.current() == before
    assert store.versions() == [before, summary["version"]]


def test_train_on_a_user_csv_with_chosen_hyperparameters(tmp_path: Path, iris: Dataset) -> None:
    index = np.concatenate([np.arange(k * 50, k * 50 + 10) for k in range(3)])
    write_csv(tmp_path / "mine.csv", iris.subset(index))
    args = ["--hidden-units", "7", "--seed", "5", "--validation-fraction", "0.2"]
    summary = last_json(
        run(
            tmp_path,
            "train",
            *FAST,
            *args,
            "--early-stopping",
            "--csv",
            "mine.csv",
            "--data-dir",
            "out",
        )
    )
    assert summary["metrics"]["train_rows"] == 24
    assert summary["metrics"]["validation_rows"] == 6
    metadata = ModelStore(tmp_path / "out" / "models").load_current().metadata
    assert metadata["data"]["rows"] == 30
    hp = metadata["hyperparameters"]
    assert (hp["hidden_units"], hp["seed"], hp["validation_fraction"]) == (7, 5, 0.2)
    assert hp["early_stopping"] is True
    assert not (tmp_path / "data").exists()


# -- evaluate -------------------------------------------------------------------------------


def test_evaluate_prints_accuracy_loss_and_confusion_matrix(trained_run: Any) -> None:
    cwd, result = trained_run
    trained = last_json(result)
    report = last_json(run(cwd, "evaluate"))
    assert report["version"] == trained["version"]
    assert report["rows"] == 150
    matrix = report["confusion_matrix"]
    assert len(matrix) == 3
    assert all(len(row) == 3 for row in matrix)
    assert [sum(row) for row in matrix] == [50, 50, 50]  # rows are the true species
    assert sum(matrix[k][k] for k in range(3)) / 150 == pytest.approx(report["accuracy"])
    assert report["accuracy"] == pytest.approx(trained["metrics"]["train_accuracy"])
    assert report["loss"] == pytest.approx(trained["metrics"]["train_loss"])
    assert report["loss"] > 0


def test_evaluate_a_chosen_version_on_a_user_csv(trained_run: Any, iris: Dataset) -> None:
    cwd, result = trained_run
    version = last_json(result)["version"]
    index = np.concatenate([np.arange(k * 50, k * 50 + 7) for k in range(3)])
    write_csv(cwd / "few.csv", iris.subset(index))
    report = last_json(run(cwd, "evaluate", "--version", version, "--csv", "few.csv"))
    assert report["version"] == version
    assert report["rows"] == 21
    assert [sum(row) for row in report["confusion_matrix"]] == [7, 7, 7]


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--hidden-units", "0"],
        ["evaluate", "--version", "../x"],
    ],
)
def test_out_of_range_arguments_give_a_one_line_error(tmp_path: Path, args: list[str]) -> None:
    assert_one_line_error(run(tmp_path, *args))
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("args", [[], ["train", "--epochs", "many"]])
def test_malformed_arguments_give_a_one_line_error(tmp_path: Path, args: list[str]) -> None:
    # argparse's own errors (missing command, a value of the wrong type) count too
    assert_one_line_error(run(tmp_path, *args))


def test_bad_csv_gives_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text(
        "sepal_length,sepal_width,petal_length,petal_width,species\n5.1,3.5,abc,0.2,setosa\n"
    )
    line = assert_one_line_error(run(tmp_path, "train", *FAST, "--csv", "bad.csv"))
    assert "line 2" in line
    assert "petal_length" in line
    assert not (tmp_path / "data").exists()


def test_evaluate_without_a_model_gives_a_one_line_error(tmp_path: Path) -> None:
    assert_one_line_error(run(tmp_path, "evaluate"))


def test_corrupt_model_gives_a_one_line_error(trained_run: Any, tmp_path: Path) -> None:
    cwd = copy_of(trained_run, tmp_path)
    version = store_in(cwd).current()
    weights = store_in(cwd).root / version / "weights.npz"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    line = assert_one_line_error(run(cwd, "evaluate"))
    assert version in line


def test_a_training_run_that_does_not_improve_gives_a_one_line_error_and_stores_nothing(
    tmp_path: Path,
) -> None:
    args = ["--epochs", "50", "--learning-rate", "10", "--momentum", "0.9999", "--quiet"]
    line = assert_one_line_error(run(tmp_path, "train", *args))
    assert "did not improve" in line
    assert "initial loss" in line
    assert not (tmp_path / "data" / "models").exists()
