"""The Iris data: the shipped CSV, user CSVs and in-memory rows, validated row by row."""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from model.errors import DataError
from model.network import FloatArray, IntArray

FEATURES: tuple[str, ...] = ("sepal_length", "sepal_width", "petal_length", "petal_width")
CLASSES: tuple[str, ...] = ("setosa", "versicolor", "virginica")
COLUMNS: tuple[str, ...] = (*FEATURES, "species")
MIN_SAMPLES_PER_CLASS = 5
MAX_MEASUREMENT_CM = 100.0


@dataclass(frozen=True)
class Dataset:
    """Raw measurements in centimetres (n, 4) and class indices (n,)."""

    raw: FloatArray
    y: IntArray

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, index: IntArray) -> Dataset:
        return Dataset(raw=self.raw[index], y=self.y[index])

    def sha256(self) -> str:
        """The sha256 (hex) of the rows, in their order: the bytes of ``raw`` (n, 4) as
        little-endian float64 in C order, then those of ``y`` (n,) as little-endian int64.

        Two datasets hash alike exactly when they hold the same numbers in the same order,
        whatever their arrays' dtypes, byte order or memory layout.
        """
        digest = hashlib.sha256(np.ascontiguousarray(self.raw, dtype="<f8").tobytes())
        digest.update(np.ascontiguousarray(self.y, dtype="<i8").tobytes())
        return digest.hexdigest()


def measurement(value: object, where: str) -> float:
    """One measurement: a finite number above 0 and at most 100 cm (booleans are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DataError(f"{where}: {value!r} is not a number")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise DataError(f"{where}: {str(value)[:40]!r} is not a number in range") from None
    if not math.isfinite(number):
        raise DataError(f"{where}: {value!r} is not finite")
    if not 0.0 < number <= MAX_MEASUREMENT_CM:
        raise DataError(f"{where}: {number!r} cm is outside (0, {MAX_MEASUREMENT_CM:g}]")
    return number


def species_index(value: object, where: str) -> int:
    if not isinstance(value, str) or value.strip() not in CLASSES:
        raise DataError(f"{where}: unknown species {value!r}; expected one of {', '.join(CLASSES)}")
    return CLASSES.index(value.strip())


def from_rows(rows: Iterable[Mapping[str, object]], *, first_row: int = 1) -> Dataset:
    """Validate rows of ``{four measurements, "species"}`` into a :class:`Dataset`.

    Errors name the row (counting from ``first_row``) and the problem: missing or extra
    columns, non-numbers, measurements that are not finite or outside (0, 100] cm, unknown
    species, and fewer than 5 samples of any species.
    """

    def labelled() -> Iterator[tuple[str, Mapping[str, object]]]:
        for number, row in enumerate(rows, start=first_row):
            missing = [c for c in COLUMNS if c not in row]
            extra = sorted(str(c) for c in row if c not in COLUMNS)
            if missing:
                raise DataError(f"row {number}: missing column(s) {', '.join(missing)}")
            if extra:
                raise DataError(f"row {number}: unexpected column(s) {', '.join(extra)}")
            yield f"row {number}", row

    return collect(labelled())


def read_csv_text(text: str, source: str = "CSV") -> Dataset:
    """Parse CSV text whose header names the five columns (in any order), then validate it."""
    reader = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(reader, [])]
    if not header:
        raise DataError(f"{source}: empty file; expected the header {','.join(COLUMNS)}")
    problems = []
    if missing := [c for c in COLUMNS if c not in header]:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if extra := [h for h in header if h not in COLUMNS]:
        problems.append(f"unexpected column(s) {', '.join(extra)}")
    if len(set(header)) != len(header):
        problems.append("duplicate columns")
    if problems:
        raise DataError(f"{source}, header: {'; '.join(problems)}")

    def labelled() -> Iterator[tuple[str, Mapping[str, object]]]:
        for line, fields in enumerate(reader, start=2):
            if not any(f.strip() for f in fields):
                continue  # blank lines carry no sample
            if len(fields) != len(header):
                raise DataError(
                    f"{source}, line {line}: {len(fields)} fields, expected {len(header)}"
                )
            yield f"{source}, line {line}", dict(zip(header, fields, strict=True))

    return collect(labelled())


def collect(rows: Iterable[tuple[str, Mapping[str, object]]]) -> Dataset:
    """Turn rows that have all five columns, each with a label for errors, into a Dataset."""
    raw: list[list[float]] = []
    y: list[int] = []
    for where, row in rows:
        raw.append([measurement(row[f], f"{where}, {f}") for f in FEATURES])
        y.append(species_index(row["species"], f"{where}, species"))
    dataset = Dataset(
        raw=np.array(raw, dtype=np.float64).reshape(-1, len(FEATURES)),
        y=np.array(y, dtype=np.int64),
    )
    counts = np.bincount(dataset.y, minlength=len(CLASSES))
    short = [
        f"{c} ({k})" for c, k in zip(CLASSES, counts, strict=True) if k < MIN_SAMPLES_PER_CLASS
    ]
    if short:
        raise DataError(
            f"every species needs at least {MIN_SAMPLES_PER_CLASS} samples; "
            f"too few: {', '.join(short)}"
        )
    return dataset


def load_csv(path: str | Path) -> Dataset:
    """Load and validate a user CSV file."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a BOM (Excel) is not a column
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read {path}: {error}") from None
    return read_csv_text(text, source=str(path))


def load_iris() -> Dataset:
    """Fisher's Iris data (150 rows, 50 per species), shipped inside the package."""
    text = resources.files("model").joinpath("data/iris.csv").read_text(encoding="utf-8")
    return read_csv_text(text, source="iris.csv")
