"""The Iris data: the shipped CSV, user CSVs and in-memory rows, and their validation errors."""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from model.data import CLASSES, FEATURES, Dataset, from_rows, load_csv, load_iris, read_csv_text
from model.errors import DataError

IRIS_SHA256 = "9cc1c345c71bcc9b486b74cbf6063fa66f4bb5e0f603a4b3c3471ec2e5e8e355"
HEADER = "sepal_length,sepal_width,petal_length,petal_width,species"


def valid_rows(per_class: int = 5) -> list[dict[str, object]]:
    return [
        {
            "sepal_length": 5.0 + i / 10,
            "sepal_width": 3.0,
            "petal_length": 1.5 + 2 * k,
            "petal_width": 0.2 + k,
            "species": species,
        }
        for k, species in enumerate(CLASSES)
        for i in range(per_class)
    ]


def csv_text(rows: list[dict[str, object]]) -> str:
    lines = [HEADER] + [",".join(str(row[c]) for c in HEADER.split(",")) for row in rows]
    return "\n".join(lines) + "\n"


def with_line(text: str, line: int, replacement: str) -> str:
    """Replace line ``line`` (1 is the header) of a CSV text."""
    lines = text.splitlines()
    lines[line - 1] = replacement
    return "\n".join(lines) + "\n"


# -- the shipped data -----------------------------------------------------------------------


def test_shipped_iris_csv_is_the_pinned_file() -> None:
    data = resources.files("model").joinpath("data/iris.csv").read_bytes()
    assert hashlib.sha256(data).hexdigest() == IRIS_SHA256


def test_load_iris_has_150_rows_50_per_species(iris: Dataset) -> None:
    assert iris.raw.shape == (150, 4)
    assert iris.raw.dtype == np.float64
    assert iris.y.shape == (150,)
    assert np.bincount(iris.y).tolist() == [50, 50, 50]
    assert len(iris) == 150


def test_load_iris_keeps_fishers_values_in_order(iris: Dataset) -> None:
    # the first and last rows of Fisher's table, and the species blocks in class order
    np.testing.assert_array_equal(iris.raw[0], [5.1, 3.5, 1.4, 0.2])
    np.testing.assert_array_equal(iris.raw[-1], [5.9, 3.0, 5.1, 1.8])
    np.testing.assert_array_equal(iris.y, np.repeat([0, 1, 2], 50))
    assert FEATURES == ("sepal_length", "sepal_width", "petal_length", "petal_width")
    assert CLASSES == ("setosa", "versicolor", "virginica")


def test_load_iris_returns_a_fresh_dataset() -> None:
    first = load_iris()
    first.raw[0, 0] = 99.0
    assert load_iris().raw[0, 0] == 5.1


def test_sha256_hashes_float64_features_then_int64_classes_little_endian(iris: Dataset) -> None:
    features = np.array(iris.raw, dtype="<f8", order="C")
    classes = np.array(iris.y, dtype="<i8")
    expected = hashlib.sha256(features.tobytes() + classes.tobytes()).hexdigest()
    assert iris.sha256() == expected


def test_sha256_ignores_layout_and_dtype_but_not_order_or_values(iris: Dataset) -> None:
    same = Dataset(
        raw=np.asfortranarray(iris.raw.astype(">f8")), y=iris.y.astype(np.int32)[::-1][::-1]
    )
    assert same.sha256() == iris.sha256()
    assert iris.subset(np.arange(150)[::-1]).sha256() != iris.sha256()
    nudged = iris.raw.copy()
    nudged[0, 0] = np.nextafter(nudged[0, 0], 10.0)
    assert Dataset(raw=nudged, y=iris.y).sha256() != iris.sha256()


# -- valid input ----------------------------------------------------------------------------


def test_from_rows_builds_the_dataset() -> None:
    rows = valid_rows()
    dataset = from_rows(rows)
    assert dataset.raw.shape == (15, 4)
    np.testing.assert_array_equal(dataset.raw[6], [5.1, 3.0, 3.5, 1.2])
    np.testing.assert_array_equal(dataset.y, np.repeat([0, 1, 2], 5))


def test_from_rows_accepts_integers_and_numeric_strings() -> None:
    rows = valid_rows()
    rows[0] |= {"sepal_length": 5, "sepal_width": "3.25"}
    np.testing.assert_array_equal(from_rows(rows).raw[0, :2], [5.0, 3.25])


def test_csv_columns_may_come_in_any_order_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    order = ["species", "petal_width", "sepal_length", "petal_length", "sepal_width"]
    lines = [",".join(order)] + [",".join(str(r[c]) for c in order) for r in valid_rows()]
    lines.insert(3, "")
    path = tmp_path / "shuffled.csv"
    path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    dataset = load_csv(path)
    expected = from_rows(valid_rows())
    np.testing.assert_array_equal(dataset.raw, expected.raw)
    np.testing.assert_array_equal(dataset.y, expected.y)


def test_csv_fields_may_carry_surrounding_spaces() -> None:
    text = with_line(csv_text(valid_rows()), 2, " 5.0 , 3.0 , 1.5 , 0.2 , setosa ")
    np.testing.assert_array_equal(read_csv_text(text).raw[0], [5.0, 3.0, 1.5, 0.2])


# -- errors in rows -------------------------------------------------------------------------

ROW_ERRORS = [
    # (change to row 3 (index 2), expected message parts)
    ({"drop": "petal_width"}, [r"row 3\b", "missing", "petal_width"]),
    ({"add": ("colour", "blue")}, [r"row 3\b", "unexpected|extra", "colour"]),
    ({"set": ("sepal_width", "wide")}, [r"row 3\b", "sepal_width", "not a number"]),
    ({"set": ("sepal_width", "")}, [r"row 3\b", "sepal_width", "not a number"]),
    ({"set": ("sepal_width", None)}, [r"row 3\b", "sepal_width", "not a number"]),
    ({"set": ("sepal_width", [3.0])}, [r"row 3\b", "sepal_width", "not a number"]),
    ({"set": ("petal_length", float("nan"))}, [r"row 3\b", "petal_length", "finite"]),
    ({"set": ("petal_length", "nan")}, [r"row 3\b", "petal_length", "finite"]),
    ({"set": ("petal_length", float("inf"))}, [r"row 3\b", "petal_length", "finite"]),
    ({"set": ("petal_length", "-inf")}, [r"row 3\b", "petal_length", "finite"]),
    ({"set": ("petal_width", 0)}, [r"row 3\b", "petal_width", "outside"]),
    ({"set": ("petal_width", -1.5)}, [r"row 3\b", "petal_width", "outside"]),
    ({"set": ("petal_width", 100.5)}, [r"row 3\b", "petal_width", "outside"]),
    ({"set": ("petal_width", True)}, [r"row 3\b", "petal_width", "not a number"]),
    ({"set": ("petal_width", False)}, [r"row 3\b", "petal_width", "not a number"]),
    ({"set": ("species", "rosa")}, [r"row 3\b", "species", "unknown species", "rosa"]),
    ({"set": ("species", 1)}, [r"row 3\b", "species", "unknown species"]),
]


def assert_message(error: pytest.ExceptionInfo[DataError], parts: list[str]) -> None:
    message = str(error.value)
    assert "\n" not in message
    for part in parts:
        assert re.search(part, message), f"{part!r} not in {message!r}"


@pytest.mark.parametrize(("change", "parts"), ROW_ERRORS)
def test_from_rows_error_names_the_row_and_the_problem(change: dict, parts: list[str]) -> None:
    rows = valid_rows()
    row = dict(rows[2])
    if "drop" in change:
        del row[change["drop"]]
    if "add" in change:
        row[change["add"][0]] = change["add"][1]
    if "set" in change:
        row[change["set"][0]] = change["set"][1]
    rows[2] = row
    with pytest.raises(DataError) as raised:
        from_rows(rows)
    assert_message(raised, parts)


def test_from_rows_counts_rows_from_first_row() -> None:
    rows = valid_rows()
    rows[2] = rows[2] | {"sepal_length": "x"}
    with pytest.raises(DataError, match=r"row 12\b"):
        from_rows(rows, first_row=10)


def test_from_rows_refuses_a_measurement_too_large_for_a_float() -> None:
    # float(10**400) raises OverflowError, not ValueError
    rows = valid_rows()
    rows[2] = rows[2] | {"sepal_length": 10**400}
    with pytest.raises(DataError, match=r"row 3\b.*sepal_length"):
        from_rows(rows)


def test_too_few_samples_of_a_species_is_refused() -> None:
    rows = [r for r in valid_rows() if r["species"] != "virginica"] + valid_rows()[10:14]
    with pytest.raises(DataError) as raised:
        from_rows(rows)
    assert_message(raised, ["at least 5", r"virginica \(4\)"])
    assert "setosa" not in str(raised.value)


def test_a_species_with_no_samples_is_refused() -> None:
    rows = [r for r in valid_rows() if r["species"] != "setosa"]
    with pytest.raises(DataError, match=r"setosa \(0\)"):
        from_rows(rows)


# -- errors in CSV files --------------------------------------------------------------------

CSV_ERRORS = [
    # (line 4 replaced by, expected message parts)
    ("5.0,3.0,1.5,0.2", [r"line 4\b", "4 fields, expected 5"]),
    ("5.0,3.0,1.5,0.2,setosa,extra", [r"line 4\b", "6 fields, expected 5"]),
    ("5.0,abc,1.5,0.2,setosa", [r"line 4\b", "sepal_width", "not a number"]),
    ("5.0,,1.5,0.2,setosa", [r"line 4\b", "sepal_width", "not a number"]),
    ("5.0,3.0,nan,0.2,setosa", [r"line 4\b", "petal_length", "finite"]),
    ("5.0,3.0,inf,0.2,setosa", [r"line 4\b", "petal_length", "finite"]),
    ("5.0,3.0,1e400,0.2,setosa", [r"line 4\b", "petal_length", "finite"]),
    ("0,3.0,1.5,0.2,setosa", [r"line 4\b", "sepal_length", "outside"]),
    ("-5.0,3.0,1.5,0.2,setosa", [r"line 4\b", "sepal_length", "outside"]),
    ("5.0,3.0,1.5,100.01,setosa", [r"line 4\b", "petal_width", "outside"]),
    ("5.0,3.0,1.5,0.2,Setosa", [r"line 4\b", "species", "unknown species"]),
    ("5.0,3.0,1.5,0.2,", [r"line 4\b", "species", "unknown species"]),
    ("5.0,3.0,1.5,0.2,true", [r"line 4\b", "species", "unknown species"]),
]


@pytest.mark.parametrize(("line", "parts"), CSV_ERRORS)
def test_csv_error_names_the_file_line_and_problem(
    tmp_path: Path, line: str, parts: list[str]
) -> None:
    path = tmp_path / "flowers.csv"
    path.write_text(with_line(csv_text(valid_rows()), 4, line), encoding="utf-8")
    with pytest.raises(DataError) as raised:
        load_csv(path)
    assert_message(raised, [re.escape(str(path)), *parts])


@pytest.mark.parametrize(
    ("header", "parts"),
    [
        (
            "sepal_length,sepal_width,petal_length,species",
            ["header", "missing", "petal_width"],
        ),
        (HEADER + ",colour", ["header", "unexpected|extra", "colour"]),
        (HEADER.replace("species", "sepal_length"), ["header", "duplicate|missing"]),
        ("a;b;c;d;e", ["header", "missing"]),
    ],
)
def test_csv_header_errors_name_the_columns(header: str, parts: list[str]) -> None:
    text = with_line(csv_text(valid_rows()), 1, header)
    with pytest.raises(DataError) as raised:
        read_csv_text(text, source="upload.csv")
    assert_message(raised, ["upload.csv", *parts])


@pytest.mark.parametrize("text", ["", "\n", "   \n\n"])
def test_empty_csv_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as raised:
        load_csv(path)
    assert_message(raised, [re.escape(str(path)), "empty|missing column"])


def test_csv_with_only_a_header_is_refused_for_too_few_samples() -> None:
    with pytest.raises(DataError, match="at least 5"):
        read_csv_text(HEADER + "\n")


def test_csv_with_too_few_samples_of_a_species_is_refused() -> None:
    rows = valid_rows()[:14]  # virginica has 4
    with pytest.raises(DataError, match=r"virginica \(4\)"):
        read_csv_text(csv_text(rows))


def test_missing_csv_file_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.csv"
    with pytest.raises(DataError, match=re.escape(str(path))):
        load_csv(path)


def test_non_utf8_csv_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(csv_text(valid_rows()).replace("setosa", "s\xe9tosa").encode("latin-1"))
    with pytest.raises(DataError, match=re.escape(str(path))):
        load_csv(path)
