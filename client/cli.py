"""``iris``: the command line of the Iris service, on top of :class:`client.IrisClient`.

Exit status: 0 success; 1 a training job failed, was cancelled or was held back by the
quality gate (also: ``iris health`` when the server is not ready); 2 bad arguments, a bad
input file, or a request the server refused (4xx, a wrong token included); 3 the server
cannot be reached, broke the connection, did not answer within ``--timeout``, failed (5xx),
or answered what is not this API (a redirect, not JSON, missing or extra rows, too large);
130 interrupted.

Whatever the server sent is printed inert: control characters escaped (``\\x1b``, ``\\n``),
never read as Rich markup.

Only click is imported at start-up: httpx, Rich and the client are imported by the command
that needs them, so ``iris --help`` stays fast.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, NoReturn

import click

from client.settings import DEFAULT_TIMEOUT, DEFAULT_URL

if TYPE_CHECKING:
    from rich.console import Console

    from client.csvio import Table
    from client.sync import IrisClient, JobHandle
    from client.types import Job, Predictions

OK, JOB_FAILED, USAGE, UNREACHABLE, INTERRUPTED = 0, 1, 2, 3, 130

# (name, type, server default, allowed): the server's POST /train hyperparameters. The CLI
# sends only the flags given, so the server's own defaults apply; tests compare this table
# with the server's OpenAPI schema.
HYPERPARAMETERS: list[tuple[str, type, Any, str]] = [
    ("hidden_units", int, 4, "1..1024"),
    ("learning_rate", float, 0.1, "(0, 10]"),
    ("epochs", int, 200, "1..10000"),
    ("batch_size", int, 16, "1..10000"),
    ("momentum", float, 0.0, "[0, 1)"),
    ("weight_decay", float, 0.005, ">= 0, L2 on W1 and W2"),
    ("validation_fraction", float, 0.0, "[0, 0.5], stratified"),
    ("seed", int, 0, "0..2^63-1"),
    ("early_stopping", bool, False, "needs --validation-fraction above 0"),
    ("patience", int, 10, "1..10000 epochs without a better validation loss"),
]
FORMATS = click.Choice(["auto", "table", "csv", "json"])
# C0 and C1 controls and DEL (cursor moves, screen clears, OSC 52 clipboard writes), line and
# paragraph separators, and the bidirectional controls that reorder what a line shows.
UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# An error line is cut here: a server's detail may be megabytes long.
MAX_LINE = 1000


def printable(text: str) -> str:
    """``text`` with every control character written as its escape: one inert line."""

    def escape(match: re.Match[str]) -> str:
        char = match.group()
        code = ord(char)
        return NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")

    return UNSAFE.sub(escape, text)


def error_line(text: str) -> str:
    """One line of stderr: escaped, and cut at :data:`MAX_LINE` characters."""
    shown = printable(text[: MAX_LINE + 1])
    return shown if len(shown) <= MAX_LINE else f"{shown[:MAX_LINE]}... (cut)"


class CommandError(Exception):
    """A one-line error on stderr with an exit status."""

    def __init__(self, message: str, exit_code: int = USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def show(self) -> None:
        click.echo(f"iris: error: {error_line(self.message)}", err=True)


def failure_for(error: Exception, url: str | None = None) -> CommandError:
    """The one line and exit status for an error of the client (or of reading a file)."""
    from client.errors import (
        AuthenticationError,
        ConnectionFailedError,
        InputError,
        ProblemError,
        ProtocolError,
    )

    if isinstance(error, AuthenticationError):
        return CommandError(
            f"{error.detail} (HTTP {error.status}); pass --token or set IRIS_API_TOKEN", USAGE
        )
    if isinstance(error, ProblemError):
        code = UNREACHABLE if error.status >= 500 else USAGE
        return CommandError(f"{error.detail} (HTTP {error.status} {error.title})", code)
    if isinstance(error, (ConnectionFailedError, ProtocolError)):
        return CommandError(str(error), UNREACHABLE)
    if isinstance(error, InputError):
        return CommandError(str(error), USAGE)
    if isinstance(error, OSError):
        return CommandError(
            f"{error.filename or ''}: {error.strerror or error}".lstrip(": "), USAGE
        )
    return CommandError(f"unexpected {type(error).__name__}: {error}", JOB_FAILED)


class IrisGroup(click.Group):
    """Turns every failure into one line on stderr and an exit status, never a traceback."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        from client.errors import LimitsWarning  # no httpx behind it

        with warnings.catch_warnings():
            warnings.simplefilter("always", LimitsWarning)
            warnings.showwarning = _warning_line
            code = self._run(args, prog_name, complete_var, extra)
        if not standalone_mode:
            return code
        sys.exit(code)

    def _run(
        self,
        args: Sequence[str] | None,
        prog_name: str | None,
        complete_var: str | None,
        extra: dict[str, Any],
    ) -> int:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as error:
            where = error.ctx.command_path if error.ctx else "iris"
            message = error_line(error.format_message())
            click.echo(f"iris: error: {message} (see '{where} --help')", err=True)
            return USAGE
        except click.ClickException as error:
            click.echo(f"iris: error: {error_line(error.format_message())}", err=True)
            return error.exit_code
        except CommandError as error:
            error.show()
            return error.exit_code
        except (click.Abort, KeyboardInterrupt):
            click.echo("iris: interrupted", err=True)
            return INTERRUPTED
        except BrokenPipeError:
            # the reader of stdout went away (`iris jobs | head -1`): not an error
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return OK
        except Exception as error:
            if os.environ.get("IRIS_DEBUG"):
                raise
            failure = failure_for(error)
            failure.show()
            return failure.exit_code
        return code if isinstance(code, int) else OK


def _warning_line(  # noqa: PLR0917  (the signature of warnings.showwarning)
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: IO[str] | None = None,
    line: str | None = None,
) -> None:
    click.echo(f"iris: warning: {error_line(str(message))}", err=True)


@dataclass
class Options:
    url: str
    token: str | None
    timeout: float

    @contextmanager
    def client(self) -> Iterator[IrisClient]:
        from client.sync import IrisClient

        try:
            iris = IrisClient(self.url, self.token, self.timeout)
        except ValueError as error:
            raise CommandError(f"--url: {error}") from None
        with iris:
            yield iris


def stdout_console(output: IO[str] | None = None) -> Console:
    from rich.console import Console

    if output is not None:
        return Console(file=output, width=200, no_color=True, soft_wrap=True)
    console = Console(soft_wrap=True)
    if not console.is_terminal:
        console = Console(soft_wrap=True, width=200)
    return console


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def resolve_format(chosen: str, output: str | None, console_is_terminal: bool) -> str:
    """``auto``: by the output file's extension, else a table on a terminal, else CSV."""
    if chosen != "auto":
        return chosen
    if output is not None:
        return "json" if output.lower().endswith(".json") else "csv"
    return "table" if console_is_terminal else "csv"


@contextmanager
def opened_output(path: str | None) -> Iterator[IO[str] | None]:
    if path is None:
        yield None
        return
    try:
        stream = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115
    except OSError as error:
        raise CommandError(f"--output {path}: {error.strerror or error}") from None
    with stream:
        yield stream


def emit(text: str, output: IO[str] | None) -> None:
    if output is not None:
        output.write(text)
    else:
        click.echo(text, nl=False)


# -- the command group ----------------------------------------------------------------------


@click.group("iris", cls=IrisGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    envvar="IRIS_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="The service's base URL [env IRIS_URL].",
)
@click.option(
    "--token",
    envvar="IRIS_API_TOKEN",
    default=None,
    help="Bearer token for train, cancel, delete and activate [env IRIS_API_TOKEN].",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds each answer may take in all (retries included).",
)
@click.version_option(package_name="iris-service", prog_name="iris")
@click.pass_context
def cli(ctx: click.Context, /, *, url: str, token: str | None, timeout: float) -> None:
    """Predict, train, follow jobs and roll back models of an Iris service over HTTP.

    \b
    Exit status: 0 success; 1 the job failed, was cancelled or was held back
    by the quality gate; 2 bad arguments or a request the server refused
    (4xx, a wrong token too); 3 the server is unreachable or failed (5xx),
    timed out, or gave an answer that is not this API's.
    """
    ctx.obj = Options(url=url, token=token or None, timeout=timeout)


def options(ctx: click.Context) -> Options:
    found = ctx.find_object(Options)
    assert found is not None  # set by cli()
    return found


# -- predict and gradients ------------------------------------------------------------------


def read_csv(path: str, *, need_species: bool = False) -> Table:
    from client.csvio import read_table

    return read_table(path, need_species=need_species)


def line_failure(error: Exception, table: Table) -> CommandError:
    """A 422 about one row, named by its line in the input file."""
    from client._core import first_row
    from client.errors import ValidationError

    if isinstance(error, ValidationError):
        row = first_row(error)
        line = table.line_of(row) if row is not None else None
        if line is not None:
            return CommandError(f"{table.name} line {line}: {error.detail} (HTTP 422)", USAGE)
    return failure_for(error)


@cli.command()
@click.argument("file", metavar="FILE.csv|-")
@click.option(
    "--format",
    "fmt",
    type=FORMATS,
    default="auto",
    show_default=True,
    help="auto: by --output's extension, a table on a terminal, else CSV.",
)
@click.option("--output", "-o", metavar="FILE", help="Write here instead of stdout.")
@click.option(
    "--model-version", metavar="VERSION", help="A stored version (default: the served one)."
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 16),
    default=None,
    help="Requests in flight for a file split into chunks (default 4).",
)
@click.pass_context
def predict(
    ctx: click.Context,
    /,
    *,
    file: str,
    fmt: str,
    output: str | None,
    model_version: str | None,
    concurrency: int | None,
) -> None:
    """Species and probabilities for every row of a CSV file ('-' reads stdin).

    The header names the columns sepal_length, sepal_width, petal_length and
    petal_width (cm); other columns are ignored. A file above the server's
    rows-per-request limit is sent in chunks, answered in input order by one
    model version.
    """
    table = read_csv(file)
    opts = options(ctx)
    with opts.client() as iris:
        try:
            with progress_bar("predicting", len(table.rows)) as advance:
                answer = iris.predict(
                    table.rows,
                    model_version=model_version,
                    concurrency=concurrency,
                    progress=advance,
                )
        except Exception as error:
            raise line_failure(error, table) from None
    with opened_output(output) as stream:
        console = stdout_console(stream)
        chosen = resolve_format(fmt, output, console.is_terminal and stream is None)
        if chosen == "json":
            emit(predictions_json(answer), stream)
        elif chosen == "csv":
            emit(predictions_csv(table, answer), stream)
        else:
            console.print(predictions_table(answer))


@contextmanager
def progress_bar(what: str, total: int) -> Iterator[Callable[[int, int], None]]:
    """A Rich progress bar on stderr when it is a terminal; else a callback doing nothing."""
    console = stderr_console()
    if not console.is_terminal:
        yield lambda done, total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        f"[bold]{what}",
        BarColumn(),
        MofNCompleteColumn(),
        "rows",
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(what, total=total)
        yield lambda done, total: bar.update(task, completed=done)


def predictions_json(answer: Predictions) -> str:
    import json

    rows = [
        {"label": p.label, "class_index": p.class_index, "probabilities": dict(p.probabilities)}
        for p in answer
    ]
    return json.dumps({"model_version": answer.model_version, "predictions": rows}) + "\n"


def predictions_csv(table: Table, answer: Predictions) -> str:
    import csv
    import io

    from client.types import CLASSES, FEATURES

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*FEATURES, "species", *(f"probability_{c}" for c in CLASSES)])
    for row, p in zip(table.rows, answer, strict=True):
        writer.writerow(
            [
                *(repr(row[f]) for f in FEATURES),
                p.label,
                *(repr(p.probabilities[c]) for c in CLASSES),
            ]
        )
    return out.getvalue()


def predictions_table(answer: Predictions) -> Any:
    from rich.table import Table as RichTable
    from rich.text import Text

    from client.types import CLASSES

    title = Text(f"model {printable(answer.model_version)}")
    table = RichTable(title=title, title_justify="left")
    table.add_column("row", justify="right", style="dim")
    table.add_column("species", style="bold")
    for name in CLASSES:
        table.add_column(name, justify="right")
    for i, p in enumerate(answer, start=1):
        probabilities = (f"{p.probabilities[c]:.4f}" for c in CLASSES)
        table.add_row(str(i), Text(printable(p.label)), *probabilities)
    return table


@cli.command()
@click.argument("file", metavar="FILE.csv|-")
@click.option(
    "--reduction",
    type=click.Choice(["mean", "sum", "none"]),
    default="mean",
    show_default=True,
    help="Mean or sum over the rows, or per row (none).",
)
@click.option(
    "--include",
    "include",
    multiple=True,
    type=click.Choice(["activations", "intermediates", "input"]),
    help="Also return these (repeat the option for several).",
)
@click.option(
    "--model-version", metavar="VERSION", help="A stored version (default: the served one)."
)
@click.option("--output", "-o", metavar="FILE", help="Write here instead of stdout.")
@click.pass_context
def gradients(
    ctx: click.Context,
    /,
    *,
    file: str,
    reduction: str,
    include: tuple[str, ...],
    model_version: str | None,
    output: str | None,
) -> None:
    """Loss and backpropagation gradients for the rows of a CSV file, as JSON.

    The file needs a species column: the label of each row.
    """
    import json

    table = read_csv(file, need_species=True)
    assert table.species is not None
    with options(ctx).client() as iris:
        try:
            answer = iris.gradients(
                table.rows,
                table.species,
                reduction=reduction,  # type: ignore[arg-type]  # a click.Choice of them
                include=include,  # type: ignore[arg-type]
                model_version=model_version,
            )
        except Exception as error:
            raise line_failure(error, table) from None
    with opened_output(output) as stream:
        emit(json.dumps(dict(answer.raw)) + "\n", stream)


# -- training jobs --------------------------------------------------------------------------


def hyperparameter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """One option per server hyperparameter; unset ones are left out of the request."""
    for name, kind, default, allowed in reversed(HYPERPARAMETERS):
        flag = name.replace("_", "-")
        if kind is bool:
            command = click.option(
                f"--{flag}/--no-{flag}",
                name,
                default=None,
                help=f"Server default: {'on' if default else 'off'}; {allowed}.",
            )(command)
        else:
            command = click.option(
                f"--{flag}",
                name,
                type=kind,
                default=None,
                help=f"Server default {default}; {allowed}.",
            )(command)
    return command


@cli.command()
@hyperparameter_options
@click.option(
    "--data",
    metavar="FILE.csv|-",
    help="Training samples: the four measurements and species (default: Iris).",
)
@click.option(
    "--min-validation-accuracy",
    type=float,
    default=None,
    help="Quality gate: activate only at or above this (needs --validation-fraction).",
)
@click.option("--no-activate", is_flag=True, help="Store the new version without serving it.")
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Show progress until the job ends; exit 1 if it fails or is held back.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="What to print when the job is started or ends.",
)
@click.pass_context
def train(
    ctx: click.Context,
    /,
    *,
    data: str | None,
    min_validation_accuracy: float | None,
    no_activate: bool,
    follow: bool,
    fmt: str,
    **hyperparameters: Any,
) -> int:
    """Start a training job; with --follow, wait for it with a live progress bar.

    Without --follow the job id is printed (alone, for scripts).
    """
    chosen = {k: v for k, v in hyperparameters.items() if v is not None}
    samples = read_csv(data, need_species=True).samples() if data else None
    with options(ctx).client() as iris:
        handle = iris.train(
            chosen,
            data=samples,
            activate=not no_activate,
            min_validation_accuracy=min_validation_accuracy,
        )
        if not follow:
            if fmt == "json":
                emit(job_json(handle.job), None)
            else:
                job_id = printable(handle.job_id)  # 32 hex digits, checked by the client
                click.echo(job_id)
                if sys.stderr.isatty():
                    click.echo(f"follow it with: iris job {job_id} --follow", err=True)
            return OK
        return finish(follow_job(handle), fmt)


def follow_job(handle: JobHandle) -> Job:
    """Wait for a job, with a progress bar on a terminal; Ctrl-C leaves the job running."""
    console = stderr_console()
    try:
        if not console.is_terminal:
            return handle.wait()
        from rich.markup import escape
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        def describe(job: Job) -> str:
            # the description is read as markup by the "[bold]" column: escape it
            return escape(printable(f"{job.job_id[:8]} {job.status}"))

        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("epoch {task.completed:.0f}/{task.total:.0f}"),
            TextColumn("{task.fields[scores]}"),
            TimeElapsedColumn(),
            console=console,
        ) as bar:
            task = bar.add_task(
                describe(handle.job),
                total=max(1, handle.job.progress.epochs),
                scores="",
            )

            def update(job: Job) -> None:
                bar.update(
                    task,
                    description=describe(job),
                    completed=job.progress.epoch,
                    total=max(1, job.progress.epochs),
                    scores=scores(job),
                )

            return handle.wait(progress=update)
    except KeyboardInterrupt:
        raise CommandError(
            f"stopped following job {handle.job_id}; it goes on on the server "
            f"(iris cancel {handle.job_id} stops it)",
            INTERRUPTED,
        ) from None


def scores(job: Job) -> str:
    p = job.progress
    parts = []
    if p.train_loss is not None:
        parts.append(f"loss {p.train_loss:.4f}")
    if p.train_accuracy is not None:
        parts.append(f"acc {p.train_accuracy:.3f}")
    if p.validation_loss is not None:
        parts.append(f"val loss {p.validation_loss:.4f}")
    if p.validation_accuracy is not None:
        parts.append(f"val acc {p.validation_accuracy:.3f}")
    return "  ".join(parts)


def outcome(job: Job) -> str:
    """One line: how the job ended, the new version and whether it is served."""
    head = f"job {job.job_id} {job.status}"
    if job.status != "succeeded":
        return f"{head}: {job.error or 'no reason given'}"
    accuracy = (job.metrics or {}).get("validation_accuracy")
    measured = f" (validation accuracy {accuracy:.4f})" if isinstance(accuracy, float) else ""
    if job.activated:
        return f"{head}: version {job.model_version} is now served{measured}"
    if job.held_back:
        gate = (job.metrics or {}).get("quality_gate") or "the quality gate held it back"
        return f"{head} but was held back: version {job.model_version} {gate}"
    return f"{head}: version {job.model_version} stored, not activated (--no-activate)"


def finish(job: Job, fmt: str) -> int:
    if fmt == "json":
        emit(job_json(job), None)
    else:
        click.echo(printable(outcome(job)))
    return OK if job.ok else JOB_FAILED


def job_json(job: Job) -> str:
    import json

    return json.dumps(job.to_json()) + "\n"


@cli.command()
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=None,
    help="How many (default: the server's, 50).",
)
@click.option(
    "--format",
    "fmt",
    type=FORMATS,
    default="auto",
    show_default=True,
    help="auto: a table on a terminal, else CSV.",
)
@click.pass_context
def jobs(ctx: click.Context, /, *, limit: int | None, fmt: str) -> None:
    """Recent training jobs, newest first."""
    with options(ctx).client() as iris:
        found = iris.jobs(limit)
    console = stdout_console()
    chosen = resolve_format(fmt, None, console.is_terminal)
    if chosen == "json":
        import json

        emit(json.dumps({"jobs": [j.to_json() for j in found]}) + "\n", None)
        return
    header = [
        "job_id",
        "status",
        "created_at",
        "epoch",
        "epochs",
        "model_version",
        "activated",
        "validation_accuracy",
        "error",
    ]
    rows = [
        [
            j.job_id,
            j.status,
            j.created_at,
            str(j.progress.epoch),
            str(j.progress.epochs),
            j.model_version or "",
            "yes" if j.activated else "no",
            fmt_number((j.metrics or {}).get("validation_accuracy")),
            j.error or "",
        ]
        for j in found
    ]
    show_rows(console, chosen, header, rows, "training jobs")


def fmt_number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ""


def show_rows(
    console: Console, chosen: str, header: list[str], rows: list[list[str]], title: str
) -> None:
    """Rows of server text as CSV or a table, every cell escaped (see :func:`printable`)."""
    rows = [[printable(cell) for cell in row] for row in rows]
    if chosen == "csv":
        import csv
        import io

        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        emit(out.getvalue(), None)
        return
    from rich.table import Table as RichTable
    from rich.text import Text

    table = RichTable(title=title, title_justify="left")
    shown = [i for i, name in enumerate(header) if name != "error" or any(r[i] for r in rows)]
    for i in shown:
        name = header[i]
        table.add_column(
            name.replace("_", " "),
            no_wrap=name in ("job_id", "version", "model_version", "created_at"),
            overflow="fold",
        )
    for row in rows:
        table.add_row(
            *(Text(short_time(row[i]) if header[i] == "created_at" else row[i]) for i in shown)
        )
    console.print(table)


def short_time(iso: str) -> str:
    """2026-12-02T07:53:22.089393+00:00 as 2026-12-02 07:53:22 (a table's width)."""
    return iso[:19].replace("T", " ")


@cli.command()
@click.argument("job_id", metavar="ID")
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Show progress until the job ends; exit 1 if it fails or is held back.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.pass_context
def job(ctx: click.Context, /, *, job_id: str, follow: bool, fmt: str) -> int:
    """One training job: status, progress, metrics, the version it made."""
    with options(ctx).client() as iris:
        handle = iris.handle(job_id)
        if follow:
            return finish(follow_job(handle), fmt)
    found = handle.job
    if fmt == "json":
        emit(job_json(found), None)
        return OK
    console = stdout_console()
    from rich.table import Table as RichTable
    from rich.text import Text

    table = RichTable(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in found.to_json().items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        table.add_row(key, Text(printable("" if value is None else str(value))))
    console.print(table)
    return OK


@cli.command()
@click.argument("job_id", metavar="ID")
@click.pass_context
def cancel(ctx: click.Context, /, *, job_id: str) -> None:
    """Ask a queued or running job to stop."""
    with options(ctx).client() as iris:
        found = iris.cancel(job_id)
    click.echo(printable(f"job {found.job_id} {found.status}: cancel requested"))


@cli.command()
@click.argument("job_id", metavar="ID")
@click.pass_context
def delete(ctx: click.Context, /, *, job_id: str) -> None:
    """Remove an ended job's record."""
    with options(ctx).client() as iris:
        iris.delete_job(job_id)
    click.echo(f"job {job_id} deleted")


# -- models, health, limits ------------------------------------------------------------------


@cli.command()
@click.option(
    "--format",
    "fmt",
    type=FORMATS,
    default="auto",
    show_default=True,
    help="auto: a table on a terminal, else CSV.",
)
@click.pass_context
def models(ctx: click.Context, /, *, fmt: str) -> None:
    """Stored model versions, newest first; the current one is marked."""
    with options(ctx).client() as iris:
        found = iris.models()
    console = stdout_console()
    chosen = resolve_format(fmt, None, console.is_terminal)
    if chosen == "json":
        import json
        from dataclasses import asdict

        emit(json.dumps(asdict(found)) + "\n", None)
        return
    header = [
        "version",
        "current",
        "serving",
        "created_at",
        "hidden_units",
        "validation_accuracy",
        "train_accuracy",
        "error",
    ]
    rows = [
        [
            m.version,
            "*" if m.version == found.current else "",
            "*" if m.version == found.serving else "",
            m.created_at or "",
            "" if m.hidden_units is None else str(m.hidden_units),
            fmt_number((m.metrics or {}).get("validation_accuracy")),
            fmt_number((m.metrics or {}).get("train_accuracy")),
            m.error or "",
        ]
        for m in found.models
    ]
    show_rows(console, chosen, header, rows, "model versions")


@cli.command()
@click.argument("version")
@click.pass_context
def activate(ctx: click.Context, /, *, version: str) -> None:
    """Serve a stored version: roll back or forward."""
    with options(ctx).client() as iris:
        answer = iris.activate(version)
    click.echo(f"now serving {printable(answer.serving)}")


@cli.command()
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.pass_context
def health(ctx: click.Context, /, *, fmt: str) -> int:
    """Alive and ready? Exit 0 when ready, 1 when alive but not ready, 3 unreachable."""
    with options(ctx).client() as iris:
        found = iris.health()
    if fmt == "json":
        import json
        from dataclasses import asdict

        emit(json.dumps(asdict(found)) + "\n", None)
    elif found.ready:
        note = f" ({found.problem})" if found.problem else ""
        click.echo(printable(f"ready: serving {found.model_version}{note}"))
    else:
        click.echo(printable(f"alive, not ready: {found.problem or 'no reason given'}"))
    return OK if found.ready else JOB_FAILED


@cli.command()
@click.pass_context
def limits(ctx: click.Context) -> None:
    """The server's request limits, as JSON."""
    import json
    from dataclasses import asdict

    with options(ctx).client() as iris:
        found = iris.limits()
    emit(json.dumps(asdict(found)) + "\n", None)


def main() -> NoReturn:
    cli.main(prog_name="iris")
    raise AssertionError("unreachable: main exits")  # pragma: no cover
