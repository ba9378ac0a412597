"""Listings of the command line (``iris jobs``, ``iris models``) as tables, CSV or JSON.

A table is for people: short ids, rounded numbers, local times with their zone, and few
enough columns for 80 characters (``wide``: every column, as long as it takes). CSV and JSON
are for programs: full ids, exact numbers, times as the server sent them. Server text is
escaped (see ``printable`` in client/iris_client/cli.py) and never read as Rich markup.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from iris_client.ids import short_ids, short_versions

if TYPE_CHECKING:
    from rich.console import Console

    from iris_client.types import Job, ModelList, ModelSummary

T = TypeVar("T")
OUTPUTS = ("table", "wide", "json", "csv")


@dataclass(frozen=True)
class Column(Generic[T]):
    """One column: its CSV name, its table header, its exact and its shown value.

    ``default``: in the 80-column table; ``whole``: ``wide`` shows the exact value (an id);
    ``tabled``: False for a CSV column that a table shows within another.
    """

    key: str
    header: str
    exact: Callable[[T], str]
    shown: Callable[[T], str]
    default: bool = True
    right: bool = False
    whole: bool = False
    tabled: bool = True


def local_time(iso: str | None) -> str:
    """An ISO 8601 time in this machine's zone, to the second, with the zone's name."""
    if not iso:
        return ""
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        return iso  # not a time: shown as sent (escaped by the caller)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # the API writes UTC
    local = when.astimezone()
    zone = local.strftime("%Z") or local.strftime("%z")
    return f"{local:%Y-%m-%d %H:%M:%S} {zone}"


def rounded(value: Any) -> str:
    """A float for people: 4 significant digits (0.9917, 0.0123, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ""
    return f"{value:.4g}"


def exact(value: Any) -> str:
    """A number as Python writes it back to the same float; '' for None."""
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def figure(key: str, header: str, value: Callable[[T], Any]) -> Column[T]:
    """A number: exact in json and csv, rounded for people in tables."""
    return Column(key, header, lambda r: exact(value(r)), lambda r: rounded(value(r)), right=True)


def job_columns(jobs: Sequence[Job]) -> list[Column[Job]]:
    short = short_ids([j.job_id for j in jobs])
    versions = short_versions([j.model_version for j in jobs if j.model_version])

    def accuracy(j: Job) -> float | None:
        found = (j.metrics or {}).get("validation_accuracy")
        return found if isinstance(found, float) else j.progress.validation_accuracy

    return [
        Column("job_id", "JOB", lambda j: j.job_id, lambda j: short[j.job_id], whole=True),
        Column("status", "STATUS", lambda j: j.status, lambda j: j.status),
        Column(
            "epoch",
            "EPOCH",
            lambda j: str(j.progress.epoch),
            lambda j: f"{j.progress.epoch}/{j.progress.epochs}",
            right=True,
        ),
        Column("epochs", "EPOCHS", lambda j: str(j.progress.epochs), str, tabled=False),
        figure("validation_accuracy", "VAL ACC", accuracy),
        Column(
            "model_version",
            "VERSION",
            lambda j: j.model_version or "",
            lambda j: versions.get(j.model_version or "", ""),
            whole=True,
        ),
        Column(
            "activated",
            "ACTIVATED",
            lambda j: "yes" if j.activated else "no",
            lambda j: "yes" if j.activated else "no",
            default=False,
        ),
        Column("created_at", "CREATED", lambda j: j.created_at, lambda j: local_time(j.created_at)),
        Column(
            "finished_at",
            "FINISHED",
            lambda j: j.finished_at or "",
            lambda j: local_time(j.finished_at),
            default=False,
        ),
        Column("note", "NOTE", lambda j: j.note or "", lambda j: j.note or "", default=False),
        Column("error", "ERROR", lambda j: j.error or "", lambda j: j.error or "", default=False),
    ]


def model_columns(found: ModelList) -> list[Column[ModelSummary]]:
    versions = short_versions([m.version for m in found.models])

    def metric(name: str) -> Callable[[ModelSummary], Any]:
        return lambda m: (m.metrics or {}).get(name)

    def mark(version: str | None) -> Callable[[ModelSummary], str]:
        return lambda m: "*" if m.version == version else ""

    hidden: Callable[[ModelSummary], str] = lambda m: exact(m.hidden_units)  # noqa: E731
    jobs = short_ids([m.job_id for m in found.models if m.job_id])
    return [
        Column(
            "version", "VERSION", lambda m: m.version, lambda m: versions[m.version], whole=True
        ),
        Column("current", "CURRENT", mark(found.current), mark(found.current)),
        Column("serving", "SERVING", mark(found.serving), mark(found.serving), default=False),
        Column(
            "created_at",
            "CREATED",
            lambda m: m.created_at or "",
            lambda m: local_time(m.created_at),
        ),
        Column("hidden_units", "HIDDEN", hidden, hidden, right=True),
        figure("validation_accuracy", "VAL ACC", metric("validation_accuracy")),
        figure("train_accuracy", "TRAIN ACC", metric("train_accuracy")),
        Column(
            "job_id",
            "JOB",
            lambda m: m.job_id or "",
            lambda m: jobs.get(m.job_id or "", ""),
            default=False,
            whole=True,
        ),
        Column("note", "NOTE", lambda m: m.note or "", lambda m: m.note or "", default=False),
        Column(
            "data_sha256",
            "DATA SHA256",
            lambda m: m.data_sha256 or "",
            lambda m: m.data_sha256 or "",
            tabled=False,
        ),
        Column("error", "ERROR", lambda m: m.error or "", lambda m: m.error or "", default=False),
    ]


def jobs_json(jobs: Sequence[Job]) -> str:
    return json.dumps({"jobs": [j.to_json() for j in jobs]}) + "\n"


def models_json(found: ModelList) -> str:
    return json.dumps(asdict(found)) + "\n"


def as_csv(items: Sequence[T], columns: Sequence[Column[T]], escape: Callable[[str], str]) -> str:
    """Every column, exact values (full ids, ISO times, floats that read back the same)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([c.key for c in columns])
    writer.writerows([escape(c.exact(item)) for c in columns] for item in items)
    return out.getvalue()


def as_table(
    items: Sequence[T],
    columns: Sequence[Column[T]],
    *,
    wide: bool,
    escape: Callable[[str], str],
) -> Any:
    """A borderless Rich table of the default columns (``wide``: all, with full ids)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, header_style="bold")
    chosen = [c for c in columns if c.tabled and (wide or c.default)]
    for column in chosen:
        table.add_column(
            column.header,
            justify="right" if column.right else "left",
            no_wrap=True,
            overflow="ellipsis",
            min_width=len(column.header),
        )
    for item in items:
        table.add_row(
            *(Text(escape(c.exact(item) if wide and c.whole else c.shown(item))) for c in chosen)
        )
    return table


def notes(
    items: Sequence[T],
    name: Callable[[T], str],
    error: Callable[[T], str | None],
    escape: Callable[[str], str],
) -> list[str]:
    """One line per item with an error (the default table has no room for them)."""
    return [escape(f"{name(item)}: {error(item)}") for item in items if error(item)]


def print_table(console: Console, table: Any, lines: Sequence[str], wide: bool) -> None:
    """On a terminal, within its width; ``wide`` or not on a terminal, as wide as it takes."""
    import click
    from rich.console import Console as RichConsole
    from rich.text import Text

    if console.is_terminal and not wide:
        console.print(table)
        for line in lines:
            console.print(Text(line))
        return
    buffer = io.StringIO()
    whole = RichConsole(
        file=buffer, width=100_000, force_terminal=console.is_terminal, highlight=False
    )
    whole.print(table)
    text = "".join(f"{line.rstrip()}\n" for line in buffer.getvalue().splitlines())
    click.echo(text + "".join(f"{line}\n" for line in lines), nl=False)
