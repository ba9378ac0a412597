"""CSV files of measurements (standard library only), with errors that name the line.

The header names the columns: ``sepal_length,sepal_width,petal_length,petal_width`` in any
order, and ``species`` for training data. Other columns are ignored (so a predict output
file reads back as training data); blank lines are skipped.
"""

from __future__ import annotations

import csv
import math
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from client.errors import InputError
from client.types import CLASSES, FEATURES

Source = str | os.PathLike[str] | IO[str]


@dataclass(frozen=True)
class Table:
    """Rows read from a CSV file, each with the line it came from."""

    name: str
    rows: list[dict[str, float]]
    species: list[str] | None
    lines: list[int]

    def samples(self) -> list[dict[str, float | str]]:
        """Rows with their species, as ``POST /train`` takes them."""
        if self.species is None:
            raise InputError(f"{self.name}: no 'species' column; training data needs one")
        return [row | {"species": s} for row, s in zip(self.rows, self.species, strict=True)]

    def line_of(self, index: int) -> int | None:
        return self.lines[index] if 0 <= index < len(self.lines) else None


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
                return _parse(stream, name, need_species)
        except OSError as error:
            raise InputError(f"{name}: cannot read: {error.strerror or error}") from None
        except UnicodeDecodeError as error:
            raise InputError(f"{name}: not UTF-8 text ({error.reason})") from None
    return _parse(
        sys.stdin if isinstance(source, (str, os.PathLike)) else source, name, need_species
    )


def _parse(stream: Iterable[str], name: str, need_species: bool) -> Table:
    reader = csv.reader(stream)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{name}: empty file; expected a header line") from None
    except csv.Error as error:
        raise InputError(f"{name} line 1: {error}") from None
    columns = [column.strip().lower() for column in header]
    missing = [f for f in FEATURES if f not in columns]
    if need_species and "species" not in columns:
        missing.append("species")
    if missing:
        raise InputError(
            f"{name} line 1: the header lacks {', '.join(missing)}; expected "
            f"{','.join(FEATURES)}{',species' if need_species else ''}"
        )
    where = [columns.index(f) for f in FEATURES]
    species_at = columns.index("species") if "species" in columns else None
    rows: list[dict[str, float]] = []
    species: list[str] = []
    lines: list[int] = []
    try:
        for fields in reader:
            line = reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) != len(columns):
                raise InputError(
                    f"{name} line {line}: {len(fields)} values, expected {len(columns)} "
                    f"(the header has {len(columns)} columns)"
                )
            row = {}
            for feature, at in zip(FEATURES, where, strict=True):
                text = fields[at].strip()
                try:
                    value = float(text)
                except ValueError:
                    value = math.nan
                if not math.isfinite(value):
                    raise InputError(f"{name} line {line}: {feature} {text!r} is not a number")
                row[feature] = value
            if species_at is not None:
                label = fields[species_at].strip()
                if need_species and label not in CLASSES:
                    raise InputError(
                        f"{name} line {line}: species {label!r} is not one of {', '.join(CLASSES)}"
                    )
                species.append(label)
            rows.append(row)
            lines.append(line)
    except csv.Error as error:
        raise InputError(f"{name} line {reader.line_num}: {error}") from None
    if not rows:
        raise InputError(f"{name}: no rows after the header")
    return Table(name, rows, species if species_at is not None else None, lines)
