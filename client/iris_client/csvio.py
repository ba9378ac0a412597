"""CSV files of measurements (standard library only), with errors that name the line.

The rule, shared with the dashboard's reader (``parseCsv`` in service/ui/predict.js) and
pinned by the cases in tests/csv_cases.json:

- UTF-8 text; a byte-order mark is ignored; lines end in LF or CRLF. Blank lines, lines of
  empty values (``,,,``) and lines starting with ``#`` are skipped, but counted: an error
  names the line of the file.
- Values are separated by commas, spaces around a value ignored; a value in double quotes
  may hold a comma, and ``""`` for a quote.
- The first line is a header unless each of its values is a number (or empty): then the
  file has no header and every line holds the four measurements in the API's order,
  sepal length, sepal width, petal length, petal width (cm).
- Header names are compared lowercased, with ``(cm)`` dropped and runs of spaces, dots and
  hyphens read as ``_``: ``sepal_length``, ``Sepal Length``, ``sepal length (cm)``
  (scikit-learn) and ``Sepal.Length`` (R) all name sepal_length. The four measurements are
  needed, ``species`` is optional, other columns are ignored (and kept by ``iris predict``);
  where a name is given twice, the first column counts.
- Every line has as many values as the header (four without one); a measurement is a
  decimal number (``5``, ``5.1``, ``.5``, ``-5e-1``); its range is the server's to judge.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from iris_client.errors import InputError
from iris_client.types import CLASSES, FEATURES

Source = str | os.PathLike[str] | IO[str]

# ASCII digits only (Python's \d takes other scripts' digits, JavaScript's does not);
# no "0x10", "inf", "1_0".
NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# One value: quoted (a comma inside, "" for a quote) or bare, then a comma or the line's end.
VALUE = re.compile(r'\s*(?:"((?:[^"]|"")*)"|([^,]*))\s*(,|$)')
SPACES = re.compile(r"[\s.-]+")


@dataclass(frozen=True)
class Table:
    """Rows read from a CSV file, each with the line it came from.

    ``header`` is the file's header as written (None when it has none) and ``cells`` each
    row's values as written, so an output can carry the input's own columns unchanged.
    """

    name: str
    rows: list[dict[str, float]]
    species: list[str] | None
    lines: list[int]
    header: list[str] | None = None
    cells: list[list[str]] | None = None

    def samples(self) -> list[dict[str, float | str]]:
        """Rows with their species, as ``POST /train`` takes them."""
        if self.species is None:
            raise InputError(f"{self.name}: no 'species' column; training data needs one")
        return [row | {"species": s} for row, s in zip(self.rows, self.species, strict=True)]

    def line_of(self, index: int) -> int | None:
        return self.lines[index] if 0 <= index < len(self.lines) else None


def column_name(name: str) -> str:
    """A header name as the rule compares it: ``Sepal Length (cm)`` is ``sepal_length``."""
    return SPACES.sub("_", name.strip().lower().replace("(cm)", "").strip())


def split_line(line: str) -> list[str]:
    """The values of one line, unquoted and stripped."""
    if '"' not in line:
        return [value.strip() for value in line.split(",")]
    values = []
    at = 0
    while True:
        match = VALUE.match(line, at)
        assert match is not None  # the bare alternative matches anything up to a comma
        quoted, bare, comma = match.groups()
        values.append(quoted.replace('""', '"') if quoted is not None else bare.strip())
        if not comma:
            return values
        at = match.end()


def is_number(text: str) -> bool:
    return NUMBER.fullmatch(text) is not None


def _name(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return "<stdin>" if os.fspath(source) == "-" else os.fspath(source)
    return str(getattr(source, "name", "<stream>"))


def read_table(source: Source, *, need_species: bool = False) -> Table:
    """Read a CSV path, ``"-"`` for standard input, or an open text stream."""
    name = _name(source)
    if isinstance(source, (str, os.PathLike)) and os.fspath(source) != "-":
        try:
            with Path(source).open(newline="", encoding="utf-8-sig") as stream:
                text = stream.read()
        except OSError as error:
            raise InputError(f"{name}: cannot read: {error.strerror or error}") from None
        except UnicodeDecodeError as error:
            raise InputError(f"{name}: not UTF-8 text ({error.reason})") from None
        return parse_text(text, name, need_species=need_species)
    given: IO[str] = sys.stdin if isinstance(source, (str, os.PathLike)) else source
    try:
        text = given.read()
    except UnicodeDecodeError as error:
        raise InputError(f"{name}: not UTF-8 text ({error.reason})") from None
    return parse_text(text, name, need_species=need_species)


def _lines(text: str) -> list[tuple[int, list[str]]]:
    """The lines that carry values, each with its number in the file (from 1)."""
    kept = []
    for number, line in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        values = split_line(line.removesuffix("\r"))
        if any(values):
            kept.append((number, values))
    return kept


def parse_text(text: str, name: str = "<text>", *, need_species: bool = False) -> Table:
    """Read CSV text by the rule in this module's docstring."""
    lines = _lines(text)
    if not lines:
        raise InputError(f"{name}: no rows; expected {','.join(FEATURES)} and a row a line")
    first_line, first = lines[0]
    header: list[str] | None = None
    if all(not value or is_number(value) for value in first):
        where = list(range(len(FEATURES)))
        species_at = None
        width = len(FEATURES)
    else:
        header, lines = first, lines[1:]
        columns = [column_name(value) for value in header]
        missing = [f for f in FEATURES if f not in columns]
        if need_species and "species" not in columns:
            missing.append("species")
        if missing:
            raise InputError(
                f"{name} line {first_line}: the header lacks {', '.join(missing)}; expected "
                f"names such as {','.join(FEATURES)}{',species' if need_species else ''} "
                "(or sepal length (cm), ...), or no header and four numbers a line"
            )
        where = [columns.index(f) for f in FEATURES]
        species_at = columns.index("species") if "species" in columns else None
        width = len(header)
    if need_species and species_at is None:
        raise InputError(
            f"{name}: no header naming a species column; training data needs "
            f"{','.join(FEATURES)},species"
        )
    rows: list[dict[str, float]] = []
    species: list[str] = []
    numbers: list[int] = []
    for line, values in lines:
        if len(values) != width:
            raise InputError(
                f"{name} line {line}: {len(values)} values, expected {width}"
                + (f" (the header has {width} columns)" if header else " (no header)")
            )
        row = {}
        for feature, at in zip(FEATURES, where, strict=True):
            text_value = values[at]
            if not is_number(text_value):
                raise InputError(f"{name} line {line}: {feature} {text_value!r} is not a number")
            row[feature] = float(text_value)
        if species_at is not None:
            label = values[species_at]
            if need_species and label not in CLASSES:
                raise InputError(
                    f"{name} line {line}: species {label!r} is not one of {', '.join(CLASSES)}"
                )
            species.append(label)
        rows.append(row)
        numbers.append(line)
    if not rows:
        raise InputError(f"{name}: no rows after the header")
    return Table(
        name,
        rows,
        species if species_at is not None else None,
        numbers,
        header=header,
        cells=[values for _, values in lines],
    )
