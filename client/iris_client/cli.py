"""``iris``: the command line of the Iris service, on top of :class:`iris_client.IrisClient`.

Exit status: 0 success; 1 a training job failed, was cancelled or was held back by the
quality gate (also: ``iris health`` when the server is not ready, and ``iris models delete``
answered no at its prompt); 2 bad arguments, a bad
input file, or a request the server refused (4xx, a wrong token included); 3 the server
cannot be reached, broke the connection, did not answer within ``--timeout``, failed (5xx),
or answered what is not this API (a redirect, not JSON, missing or extra rows, too large);
130 interrupted.

Whatever the server sent is printed inert: control characters escaped (``\\x1b``, ``\\n``),
never read as Rich markup.

The server and token come from ``--url``/``--token``, else ``IRIS_URL``/``IRIS_API_TOKEN``,
else what ``iris login`` saved (``iris_client.config``; its token only for its URL), else the
default URL. A job id or model version may be given as any unique prefix (``iris_client.ids``).

Only click is imported at start-up: httpx, Rich and the client are imported by the command
that needs them, so ``iris --help`` stays fast.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from iris_client.settings import COMPLETE_SECONDS, DEFAULT_TIMEOUT, DEFAULT_URL, PROGRESS_SECONDS

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem
    from rich.console import Console

    from iris_client.config import Login
    from iris_client.csvio import Table
    from iris_client.sync import IrisClient, JobHandle
    from iris_client.types import (
        Canary,
        Decision,
        Feedback,
        Job,
        Monitoring,
        Predictions,
        Routing,
        RoutingEvent,
    )

T = TypeVar("T")
OK, JOB_FAILED, USAGE, UNREACHABLE, INTERRUPTED = 0, 1, 2, 3, 130


def text_or_json(command: Callable[..., Any]) -> Callable[..., Any]:
    """``-o/--format text|json`` of the commands that print one answer; ``--json`` is
    ``-o json``. The command gets ``fmt``."""

    @functools.wraps(command)
    def run(*args: Any, json_flag: bool, **kwargs: Any) -> Any:
        if json_flag:
            kwargs["fmt"] = "json"
        return command(*args, **kwargs)

    flagged = click.option("--json", "json_flag", is_flag=True, help="The same as -o json.")(run)
    return click.option(
        "-o",
        "--format",
        "fmt",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
    )(flagged)


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
LISTINGS = click.Choice(["auto", "table", "wide", "json", "csv"])
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
    from iris_client.errors import (
        AuthenticationError,
        ConnectionFailedError,
        InputError,
        ProblemError,
        ProtocolError,
    )

    if isinstance(error, AuthenticationError):
        return CommandError(
            f"{error.detail} (HTTP {error.status}); pass --token or set IRIS_API_TOKEN "
            "(or save one with 'iris login')",
            USAGE,
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
        from iris_client.errors import LimitsWarning  # no httpx behind it

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
    """``url`` and ``token`` as given by a flag or the environment (None: not given)."""

    url: str | None
    token: str | None
    timeout: float
    token_on_command_line: bool = False

    def saved(self) -> Login | None:
        from iris_client.config import load

        return load()

    def server(self) -> tuple[str, str | None]:
        """The URL and token to use: flag, else environment, else the saved login, else the
        default URL. The saved token goes only to the URL it was saved for."""
        saved = self.saved() if self.url is None or self.token is None else None
        url = self.url or (saved.url if saved is not None else DEFAULT_URL)
        token = self.token
        if token is None and saved is not None and same_url(saved.url, url):
            token = saved.token
        return url, token

    @contextmanager
    def client(self) -> Iterator[IrisClient]:
        from iris_client.sync import IrisClient

        url, token = self.server()
        try:
            iris = IrisClient(url, token, self.timeout)
        except ValueError as error:
            raise CommandError(f"--url: {error}") from None
        with iris:
            yield iris


def same_url(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


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
    default=None,
    help=f"The service's base URL [env IRIS_URL; else the one 'iris login' saved; "
    f"else {DEFAULT_URL}].",
)
@click.option(
    "--token",
    envvar="IRIS_API_TOKEN",
    default=None,
    help="Bearer token for train, cancel, delete and activate [env IRIS_API_TOKEN; "
    "else the one 'iris login' saved for the URL].",
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
    by the quality gate (or a deletion was declined); 2 bad arguments or a
    request the server refused (4xx, a wrong token too);
    3 the server is unreachable or failed (5xx), timed out, or gave an
    answer that is not this API's.

    \b
    A job id or version may be any unique prefix (as iris jobs and iris
    models list them). Shell completion, in ~/.bashrc:
    eval "$(_IRIS_COMPLETE=bash_source iris)"  (zsh_source, fish_source).
    """
    from click.core import ParameterSource

    ctx.obj = Options(
        url=url or None,
        token=token or None,
        timeout=timeout,
        token_on_command_line=ctx.get_parameter_source("token") == ParameterSource.COMMANDLINE,
    )


def options(ctx: click.Context) -> Options:
    found = ctx.find_object(Options)
    assert found is not None  # set by cli()
    return found


# -- short ids: resolved against the server's listings, completed from them ---------------------

MAX_JOBS_LISTED = 1000  # the most GET /train lists


def job_id_of(iris: IrisClient, given: str) -> str:
    """The job ``given`` names: a full id as it is, else the one recent job it is a prefix of."""
    from iris_client.ids import check_job_prefix, is_full_job_id, resolve

    if is_full_job_id(given):
        return given
    check_job_prefix(given)
    ids = [j.job_id for j in iris.jobs(MAX_JOBS_LISTED)]
    try:
        return resolve(given, ids, "job id")
    except ValueError as error:
        raise CommandError(f"{error} (iris jobs lists the recent ones)") from None


def version_of(iris: IrisClient, given: str) -> str:
    """The version ``given`` names: a full one as it is, else the one stored version it is a
    prefix of (of the whole version, or of the eight hex digits a table shows)."""
    from iris_client.errors import NotFoundError
    from iris_client.ids import is_full_version, resolve

    if is_full_version(given):
        return given
    try:
        listed = iris.models()
    except NotFoundError:
        return given  # no listing to resolve against: the server judges the name itself
    try:
        return resolve(given, [m.version for m in listed.models], "model version", keys=True)
    except ValueError as error:
        raise CommandError(f"{error} (iris models lists them)") from None


def completing(ctx: click.Context) -> IrisClient:
    """A client for shell completion: the root's options, a short timeout, no retries."""
    from iris_client._core import RetryPolicy
    from iris_client.sync import IrisClient

    params = ctx.find_root().params
    url, token = Options(params.get("url"), params.get("token"), COMPLETE_SECONDS).server()
    return IrisClient(url, token, COMPLETE_SECONDS, retry=RetryPolicy(attempts=1))


def asked(ctx: click.Context, question: Callable[[IrisClient], T]) -> T | None:
    """``question`` put to the server for shell completion; None on any failure (a completion
    never prints an error or a warning into the user's shell)."""
    try:
        with warnings.catch_warnings(), completing(ctx) as iris:
            warnings.simplefilter("ignore")
            return question(iris)
    except Exception:
        return None


def complete_job_ids(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Recent job ids starting with what was typed; nothing when the server cannot say."""
    from click.shell_completion import CompletionItem

    found = asked(ctx, lambda iris: iris.jobs(100))
    return [
        CompletionItem(j.job_id, help=printable(j.status))
        for j in found or ()
        if j.job_id.startswith(incomplete)
    ]


def complete_versions(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Stored versions that what was typed names; nothing when the server cannot say."""
    from click.shell_completion import CompletionItem

    from iris_client.ids import matches

    found = asked(ctx, lambda iris: iris.models())
    if found is None:
        return []
    marks = {found.current: "current", found.serving: "serving"}
    return [
        CompletionItem(version, help=marks.get(version, ""))
        for version in matches(incomplete, [m.version for m in found.models], keys=True)
        if printable(version) == version  # only what a shell can take back as typed
    ]


# -- predict and gradients ------------------------------------------------------------------


def read_csv(path: str, *, need_species: bool = False) -> Table:
    from iris_client.csvio import read_table

    return read_table(path, need_species=need_species)


# Options several commands take, declared once.
model_version_option = click.option(
    "--model-version",
    metavar="VERSION",
    shell_complete=complete_versions,
    help="A stored version or a unique prefix (default: the served one).",
)
output_option = click.option("--output", "-o", metavar="FILE", help="Write here instead of stdout.")


def line_failure(error: Exception, table: Table) -> CommandError:
    """A 422 about one row, named by its line in the input file."""
    from iris_client._core import first_row
    from iris_client.errors import ValidationError

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
@output_option
@model_version_option
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

    \b
    The header, if any, names the measurements (cm): sepal_length,
    sepal_width, petal_length, petal_width, any case, spaces for '_', or
    scikit-learn's 'sepal length (cm)'; without a header each line is the
    four numbers in that order. CSV output is the input's own columns
    unchanged, then predicted_species, p_setosa, p_versicolor, p_virginica.

    A file above the server's rows-per-request limit is sent in chunks,
    answered in input order by one model version.
    """
    table = read_csv(file)
    opts = options(ctx)
    with opts.client() as iris:
        if model_version is not None:
            model_version = version_of(iris, model_version)
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
            console.print(predictions_table(table, answer))


@cli.command()
@click.argument("file", metavar="FILE.csv|FILE.npy|-")
@click.option(
    "--protocol",
    type=click.Choice(["http", "grpc"]),
    default="http",
    show_default=True,
    help="HTTP with binary tensors, or gRPC with raw contents (the Open Inference Protocol).",
)
@click.option(
    "--grpc-url",
    metavar="HOST:PORT",
    default=None,
    help="The server's gRPC address, for --protocol grpc (default: --url's host, port 8001).",
)
@output_option
@model_version_option
@click.pass_context
def infer(
    ctx: click.Context,
    /,
    *,
    file: str,
    protocol: str,
    grpc_url: str | None,
    output: str | None,
    model_version: str | None,
) -> None:
    """The Open Inference Protocol's inference for a CSV or .npy file, in one call.

    \b
    A .npy file holds an (n, 4) array of measurements (cm); a CSV follows
    the predict command's rule. The rows go as FP64 bytes and the answers
    come back as bytes, over HTTP or gRPC: CSV output is one line a row,
    predicted_species, p_setosa, p_versicolor, p_virginica, as 'iris
    predict' writes them. The rows must fit the server's limits.
    """
    import csv
    import io

    from iris_client._oip import numpy
    from iris_client.errors import BadRequestError, InputError
    from iris_client.types import CLASSES, FEATURES

    np = numpy()
    table = None
    if file.endswith(".npy"):
        try:
            rows = np.load(file, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise InputError(f"{file}: not a NumPy array file ({error})") from None
        if not isinstance(rows, np.ndarray):  # an .npz under another name
            raise InputError(f"{file}: an archive of arrays, not one (n, 4) array")
    else:
        table = read_csv(file)
        rows = np.array([[row[f] for f in FEATURES] for row in table.rows], dtype=np.float64)
    opts = options(ctx)
    with opts.client() as iris:
        if model_version is not None:
            model_version = version_of(iris, model_version)
        try:
            answer = iris.infer(
                rows, model_version=model_version, protocol=protocol, grpc_url=grpc_url
            )
        except InputError as error:
            raise InputError(f"{file}: {error}") from None
        except BadRequestError as error:
            # "row N" of the request: named by its line in the CSV, as predict names them
            found = re.search(r"\brow (\d+)\b", error.detail)
            line = table.line_of(int(found.group(1))) if table and found else None
            if table is None or line is None:
                raise
            raise CommandError(f"{table.name} line {line}: {error.detail}", USAGE) from None
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["predicted_species", *(f"p_{c}" for c in CLASSES)])
    for label, probabilities in zip(answer.labels, answer.probabilities, strict=True):
        writer.writerow([label, *(repr(float(p)) for p in probabilities)])
    with opened_output(output) as stream:
        emit(text.getvalue(), stream)


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


def added_columns(header: Sequence[str]) -> list[str]:
    """predicted_species and p_<class>, with a suffix (_2, _3, ...) where the input has any of
    those names already: an input column is never written over."""
    from iris_client.csvio import column_name
    from iris_client.types import CLASSES

    taken = {column_name(name) for name in header}
    base = ["predicted_species", *(f"p_{c}" for c in CLASSES)]
    suffix, n = "", 1
    while any(name + suffix in taken for name in base):
        n += 1
        suffix = f"_{n}"
    return [name + suffix for name in base]


def predictions_csv(table: Table, answer: Predictions) -> str:
    """The input's columns as it wrote them (a header of ours if it had none), then ours."""
    import csv
    import io

    from iris_client.types import CLASSES, FEATURES

    header = table.header if table.header is not None else list(FEATURES)
    cells = table.cells or [[repr(row[f]) for f in FEATURES] for row in table.rows]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*header, *added_columns(header)])
    for values, p in zip(cells, answer, strict=True):
        writer.writerow([*values, p.label, *(repr(p.probabilities[c]) for c in CLASSES)])
    return out.getvalue()


def predictions_table(table: Table, answer: Predictions) -> Any:
    from rich.table import Table as RichTable
    from rich.text import Text

    from iris_client.types import CLASSES

    title = Text(f"model {printable(answer.model_version)}")
    shown = RichTable(title=title, title_justify="left", box=None, header_style="bold")
    shown.add_column("LINE", justify="right", style="dim")
    if table.species is not None:
        shown.add_column("SPECIES")
    shown.add_column("PREDICTED", style="bold")
    for name in CLASSES:
        shown.add_column(f"P({name.upper()})", justify="right")
    for i, p in enumerate(answer):
        given = [Text(printable(table.species[i]))] if table.species is not None else []
        probabilities = (f"{p.probabilities[c]:.4f}" for c in CLASSES)
        line = table.line_of(i)
        shown.add_row(str(line or i + 1), *given, Text(printable(p.label)), *probabilities)
    return shown


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
@model_version_option
@output_option
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
        if model_version is not None:
            model_version = version_of(iris, model_version)
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
    "--note",
    metavar="TEXT",
    help="Kept with the job and the version it makes (one line, at most 200 characters).",
)
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
    note: str | None,
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
            note=note,
        )
        if not follow:
            if fmt == "json":
                emit(job_json(handle.job), None)
            else:
                job_id = printable(handle.job_id)  # 32 hex digits, checked by the client
                click.echo(job_id)
                if sys.stderr.isatty():
                    click.echo(f"follow it with: iris job {job_id[:8]} --follow", err=True)
            return OK
        return finish(follow_job(handle), fmt)


def follow_job(handle: JobHandle) -> Job:
    """Wait for a job: a progress bar on a terminal, else a progress line on stderr every
    few seconds (a CI log); Ctrl-C leaves the job running."""
    console = stderr_console()
    try:
        if not console.is_terminal:
            return handle.wait(progress=progress_lines())
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


def progress_lines(every: float = PROGRESS_SECONDS) -> Callable[[Job], None]:
    """A ``wait`` callback writing :func:`progress_line` to stderr: at a change of status and
    at most every ``every`` seconds between."""
    last: list[tuple[float, str]] = []

    def show(job: Job) -> None:
        now = time.monotonic()
        if not last or job.status != last[-1][1] or now - last[-1][0] >= every:
            click.echo(progress_line(job), err=True)
            last[:] = [(now, job.status)]

    return show


def progress_line(job: Job) -> str:
    """``job 1a2b3c4d running epoch 40/200  loss 0.4012  acc 0.870  elapsed 0:00:12``."""
    p = job.progress
    parts = [f"job {job.job_id[:8]} {job.status}", f"epoch {p.epoch}/{p.epochs}"]
    if scores(job):
        parts.append(scores(job))
    if (elapsed := elapsed_seconds(job)) is not None:
        minutes, seconds = divmod(int(elapsed), 60)
        parts.append(f"elapsed {minutes // 60}:{minutes % 60:02d}:{seconds:02d}")
    return printable("  ".join(parts))


def elapsed_seconds(job: Job) -> float | None:
    """Seconds since the job started (to its end, once ended); None before it starts."""
    from datetime import UTC, datetime

    try:
        started = datetime.fromisoformat(job.started_at) if job.started_at else None
        ended = datetime.fromisoformat(job.finished_at) if job.finished_at else None
    except ValueError:
        return None
    if started is None:
        return None
    if started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    if ended is not None and ended.tzinfo is None:
        ended = ended.replace(tzinfo=UTC)
    return max(0.0, ((ended or datetime.now(UTC)) - started).total_seconds())


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


def listing_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``-o table|wide|json|csv`` (``--format`` is the older name)."""
    return click.option(
        "-o",
        "--output",
        "--format",
        "output",
        type=LISTINGS,
        default="auto",
        show_default=True,
        help="table: short ids, fits 80 columns; wide: every column; json, csv: exact "
        "values (full ids, times as sent); auto: table on a terminal, else csv.",
    )(command)


@cli.command()
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=None,
    help="How many (default: the server's, 50).",
)
@listing_option
@click.pass_context
def jobs(ctx: click.Context, /, *, limit: int | None, output: str) -> None:
    """Recent training jobs, newest first."""
    from iris_client import listing

    with options(ctx).client() as iris:
        found = iris.jobs(limit)
    console = stdout_console()
    chosen = resolve_format(output, None, console.is_terminal)
    if chosen == "json":
        emit(listing.jobs_json(found), None)
        return
    columns = listing.job_columns(found)
    if chosen == "csv":
        emit(listing.as_csv(found, columns, printable), None)
        return
    wide = chosen == "wide"
    table = listing.as_table(found, columns, wide=wide, escape=printable)
    errors = [] if wide else listing.notes(found, columns[0].shown, lambda j: j.error, error_line)
    listing.print_table(console, table, errors, wide)


@cli.command()
@click.argument("job_id", metavar="ID", shell_complete=complete_job_ids)
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Show progress until the job ends; exit 1 if it fails or is held back.",
)
@text_or_json
@click.pass_context
def job(ctx: click.Context, /, *, job_id: str, follow: bool, fmt: str) -> int:
    """One training job (ID or a unique prefix): status, progress, metrics, its version."""
    with options(ctx).client() as iris:
        handle = iris.handle(job_id_of(iris, job_id))
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
@click.argument("job_id", metavar="ID", shell_complete=complete_job_ids)
@click.pass_context
def cancel(ctx: click.Context, /, *, job_id: str) -> None:
    """Ask a queued or running job (ID or a unique prefix) to stop."""
    with options(ctx).client() as iris:
        found = iris.cancel(job_id_of(iris, job_id))
    click.echo(printable(f"job {found.job_id} {found.status}: cancel requested"))


@cli.command()
@click.argument("job_id", metavar="ID", shell_complete=complete_job_ids)
@click.pass_context
def delete(ctx: click.Context, /, *, job_id: str) -> None:
    """Remove an ended job's record (ID or a unique prefix)."""
    with options(ctx).client() as iris:
        job_id = job_id_of(iris, job_id)
        iris.delete_job(job_id)
    click.echo(f"job {job_id} deleted")


# -- models, health, limits ------------------------------------------------------------------


@cli.group(invoke_without_command=True)
@listing_option
@click.pass_context
def models(ctx: click.Context, /, *, output: str) -> None:
    """Stored model versions, newest first; the current one is marked.

    \b
    iris models                  the listing (-o wide adds the job and the note)
    iris models show VERSION     one version: metadata, metrics, job, note
    iris models delete VERSION   delete a stored version (not the current one)
    """
    if ctx.invoked_subcommand is not None:
        return
    from iris_client import listing

    with options(ctx).client() as iris:
        found = iris.models()
    console = stdout_console()
    chosen = resolve_format(output, None, console.is_terminal)
    if chosen == "json":
        emit(listing.models_json(found), None)
        return
    columns = listing.model_columns(found)
    if chosen == "csv":
        emit(listing.as_csv(found.models, columns, printable), None)
        return
    wide = chosen == "wide"
    table = listing.as_table(found.models, columns, wide=wide, escape=printable)
    errors = (
        [] if wide else listing.notes(found.models, columns[0].shown, lambda m: m.error, error_line)
    )
    listing.print_table(console, table, errors, wide)


# The fields `iris models show` puts first, in this order; the rest follow as the server sent.
SHOWN_FIRST = ("version", "active", "created_at", "job_id", "note", "data_sha256")


@models.command("show")
@click.argument("version", shell_complete=complete_versions)
@text_or_json
@click.pass_context
def show_model(ctx: click.Context, /, *, version: str, fmt: str) -> None:
    """One stored version (or a unique prefix): metadata, metrics, job, note.

    Also the sha256 of its training data; -o json prints the server's answer.
    """
    with options(ctx).client() as iris:
        found = iris.model(version_of(iris, version))
    metadata = dict(found.metadata)
    if fmt == "json":
        import json

        emit(json.dumps(metadata) + "\n", None)
        return
    from rich.table import Table as RichTable
    from rich.text import Text

    table = RichTable(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    keys = [k for k in SHOWN_FIRST if k in metadata] + [k for k in metadata if k not in SHOWN_FIRST]
    for key in keys:
        table.add_row(Text(printable(key)), Text(printable(shown_value(metadata[key]))))
    stdout_console().print(table)


def shown_value(value: Any) -> str:
    """A metadata value on one line: objects as key=value pairs, lists comma-separated."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return ", ".join(f"{k}={shown_value(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(shown_value(v) for v in value)
    return str(value)


def on_terminal() -> bool:
    """Is someone at a terminal to answer a question?"""
    return sys.stdin.isatty()


@models.command("delete")
@click.argument("version", shell_complete=complete_versions)
@click.option("--yes", "-y", is_flag=True, help="Delete without asking (asked on a terminal).")
@click.pass_context
def delete_model(ctx: click.Context, /, *, version: str, yes: bool) -> int:
    """Delete a stored version (or a unique prefix), not the current one.

    On a terminal iris asks first, unless --yes; answering no exits 1 with
    nothing deleted. A version the server serves is refused (HTTP 409, exit 2):
    activate another one first.
    """
    with options(ctx).client() as iris:
        version = version_of(iris, version)
        shown = printable(version)
        if not yes and on_terminal():
            question = f"Delete model version {shown}? It cannot be undone"
            if not click.confirm(question, default=False, err=True):
                click.echo(f"iris: version {shown} not deleted", err=True)
                return JOB_FAILED
        iris.delete_model(version)
    click.echo(f"version {shown} deleted")
    return OK


@cli.command()
@click.argument("version", shell_complete=complete_versions)
@click.pass_context
def activate(ctx: click.Context, /, *, version: str) -> None:
    """Serve a stored version (or a unique prefix): roll back or forward."""
    with options(ctx).client() as iris:
        answer = iris.activate(version_of(iris, version))
    click.echo(f"now serving {printable(answer.serving)}")


@cli.command()
@text_or_json
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


# -- the rollout: routing, feedback, monitoring -------------------------------------------------


def screen_console() -> Console:
    """stdout for what people read: as wide as the terminal, else 80 columns."""
    from rich.console import Console

    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=80)


def show(console: Console, renderable: Any) -> None:
    """On a terminal as Rich draws it; else without the spaces that pad its lines."""
    if console.is_terminal:
        console.print(renderable)
        return
    with console.capture() as captured:
        console.print(renderable)
    click.echo("".join(f"{line.rstrip()}\n" for line in captured.get().splitlines()), nl=False)


def json_line(data: Any) -> None:
    import json

    emit(json.dumps(data) + "\n", None)


def short_of(versions: Sequence[str]) -> Callable[[str | None], str]:
    """A version as tables show it (its 8 hex digits), told apart from the others given."""
    from iris_client.ids import short_versions

    short = short_versions(list(versions))
    return lambda version: short.get(version, version) if version else ""


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def rule_text(canary: Canary) -> str:
    if canary.promote_after is None:
        return (
            "rule: none, a person decides (iris activate VERSION promotes it, "
            "iris routing set --no-canary removes it)"
        )
    less = f" less {canary.max_accuracy_drop:g}" if canary.max_accuracy_drop else ""
    return (
        f"rule: after {canary.promote_after} feedback labels, promoted if its accuracy "
        f"on them is at least stable's on the same rows{less}, else rolled back"
    )


def routing_view(found: Routing) -> Any:
    """The plan as a two-column grid: what each role is, the canary's share and rule."""
    from rich.table import Table as RichTable
    from rich.text import Text

    grid = RichTable.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    grid.add_row("stable", Text(printable(found.stable or "none (no version is active)")))
    canary = found.canary
    if canary is None:
        grid.add_row("canary", "none")
    else:
        share = f"{canary.weight * 100:.4g}%"
        grid.add_row("canary", Text(printable(canary.version)))
        grid.add_row(
            "", Text(f"weight {canary.weight:g}: {share} of the requests that name no version")
        )
        grid.add_row("", Text(printable(rule_text(canary))))
    grid.add_row("shadow", Text(printable(found.shadow or "none")))
    grid.add_row("revision", Text(str(found.revision)))
    return grid


def show_routing(found: Routing, fmt: str, headline: str | None = None) -> None:
    if fmt == "json":
        json_line(dict(found.raw))
        return
    if headline is not None:
        click.echo(printable(headline))
    show(screen_console(), routing_view(found))


@cli.group(invoke_without_command=True)
@text_or_json
@click.pass_context
def routing(ctx: click.Context, /, *, fmt: str) -> None:
    """The traffic split: stable, a canary and its rule, a shadow.

    \b
    iris routing                 the plan (-o json: the server's answer)
    iris routing set ...         a canary and its rule, a shadow (token)
    iris routing clear           no canary, no shadow: stable answers all
    iris routing history         every change, promotion and rollback
    """
    if ctx.invoked_subcommand is not None:
        return
    with options(ctx).client() as iris:
        found = iris.routing()
    show_routing(found, fmt)


@routing.command("set")
@click.option(
    "--canary",
    "canary_version",
    metavar="VERSION",
    shell_complete=complete_versions,
    help="The canary: a stored version (or a unique prefix) other than stable.",
)
@click.option(
    "--weight",
    type=float,
    help="The canary's share of the requests that name no version, between 0 and 1.",
)
@click.option(
    "--promote-after",
    type=int,
    metavar="N",
    help="Feedback labels after which the rule promotes or rolls back the canary "
    "(default: no rule, a person decides).",
)
@click.option(
    "--max-accuracy-drop",
    type=float,
    metavar="D",
    help="How far below stable's the canary's accuracy may be, on the same rows, and "
    "still be promoted (default 0).",
)
@click.option(
    "--shadow",
    "shadow_version",
    metavar="VERSION",
    shell_complete=complete_versions,
    help="The shadow: a version (or a unique prefix) that computes every request stable "
    "answers, off the request's path.",
)
@click.option("--no-canary", is_flag=True, help="Remove the canary.")
@click.option("--no-shadow", is_flag=True, help="Remove the shadow.")
@text_or_json
@click.pass_context
def set_routing(
    ctx: click.Context,
    /,
    *,
    canary_version: str | None,
    weight: float | None,
    promote_after: int | None,
    max_accuracy_drop: float | None,
    shadow_version: str | None,
    no_canary: bool,
    no_shadow: bool,
    fmt: str,
) -> None:
    """Set the canary, the shadow or both; what is not named stays as it is.

    \b
    iris routing set --canary VERSION --weight 0.25 --promote-after 100
    iris routing set --shadow VERSION
    iris routing set --no-canary

    --canary replaces the whole canary (its weight and rule). The change is
    made from the routing read just before: if it changed meanwhile (the rule
    decided, or someone else changed it), nothing is changed (HTTP 409, exit 2).
    """
    from iris_client.errors import ConflictError
    from iris_client.types import Canary

    canary_flags = (weight, promote_after, max_accuracy_drop)
    if canary_version is None and any(flag is not None for flag in canary_flags):
        raise click.UsageError(
            "--weight, --promote-after and --max-accuracy-drop describe a canary: "
            "give --canary VERSION too"
        )
    if canary_version is not None and weight is None:
        raise click.UsageError(
            "--canary needs --weight, its share of the requests (between 0 and 1)"
        )
    if canary_version is not None and no_canary:
        raise click.UsageError("--canary and --no-canary contradict each other")
    if shadow_version is not None and no_shadow:
        raise click.UsageError("--shadow and --no-shadow contradict each other")
    if canary_version is None and shadow_version is None and not (no_canary or no_shadow):
        raise click.UsageError(
            "nothing to set: give --canary VERSION --weight W, --shadow VERSION, --no-canary "
            "or --no-shadow ('iris routing clear' removes both)"
        )
    with options(ctx).client() as iris:
        current = iris.routing()
        canary = None if no_canary else current.canary
        if canary_version is not None and weight is not None:
            canary = Canary(
                version_of(iris, canary_version), weight, promote_after, max_accuracy_drop or 0.0
            )
        shadow = None if no_shadow else current.shadow
        if shadow_version is not None:
            shadow = version_of(iris, shadow_version)
        try:
            found = iris.set_routing(canary, shadow, revision=current.revision)
        except ConflictError as error:
            raise CommandError(
                f"{error.detail} (HTTP 409); nothing was changed: run the command again"
            ) from None
    show_routing(found, fmt, f"routing set (revision {found.revision}):")


@routing.command("clear")
@text_or_json
@click.pass_context
def clear_routing(ctx: click.Context, /, *, fmt: str) -> None:
    """Remove the canary and the shadow: stable answers every request."""
    with options(ctx).client() as iris:
        found = iris.clear_routing()
    if fmt == "json":
        json_line(dict(found.raw))
        return
    stable = found.stable or "stable"
    click.echo(
        printable(f"routing cleared: {stable} answers every request (revision {found.revision})")
    )


def after_event(event: RoutingEvent, short: Callable[[str | None], str]) -> str:
    """The routing an event left, in a few words."""
    parts = []
    if event.canary is not None:
        rule = (
            f", rule after {event.canary.promote_after}"
            if event.canary.promote_after is not None
            else ""
        )
        parts.append(f"canary {short(event.canary.version)} at {event.canary.weight:g}{rule}")
    if event.shadow is not None:
        parts.append(f"shadow {short(event.shadow)}")
    return "then: " + ("; ".join(parts) if parts else "stable alone")


@routing.command("history")
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=None,
    help="The newest N entries (default: the newest 1000).",
)
@text_or_json
@click.pass_context
def routing_history(ctx: click.Context, /, *, limit: int | None, fmt: str) -> None:
    """Every routing change, promotion and rollback, oldest first, with its reason."""
    from iris_client.listing import local_time

    with options(ctx).client() as iris:
        events = iris.routing_history(limit)
    if fmt == "json":
        json_line({"history": [dict(event.raw) for event in events]})
        return
    console = screen_console()
    from rich.table import Table as RichTable
    from rich.text import Text

    if not events:
        click.echo("no routing changes yet")
        return
    named = [e.canary.version for e in events if e.canary] + [e.shadow for e in events if e.shadow]
    short = short_of(named)
    table = RichTable(box=None, pad_edge=False, header_style="bold")
    table.add_column("TIME", no_wrap=True)
    table.add_column("EVENT", no_wrap=True)
    table.add_column("REASON", overflow="fold")
    for event in events:
        reason = Text(printable(event.reason))
        if event.event != "routing_changed":  # whose reason says the routing it set
            reason.append("\n" + printable(after_event(event, short)), style="dim")
        table.add_row(Text(printable(local_time(event.at))), Text(printable(event.event)), reason)
    show(console, table)


@cli.command()
@click.argument("file", metavar="FILE.csv|-")
@click.option(
    "--routing-key",
    metavar="KEY",
    help="Sent as X-Routing-Key with every prediction: one key meets one version.",
)
@model_version_option
@text_or_json
@click.pass_context
def feedback(
    ctx: click.Context,
    /,
    *,
    file: str,
    routing_key: str | None,
    model_version: str | None,
    fmt: str,
) -> None:
    """Predict a labelled CSV, then send its species as feedback to the versions that
    answered.

    \b
    The file holds the four measurements and species (as for train --data).
    Its rows are predicted in requests of the server's rows-per-request limit,
    each routed on its own (so a canary may answer some), or all by
    --model-version; then each version gets the labels of the rows it
    answered. Printed per version: rows, how many it predicts right, its
    accuracy, and what the rule decided of the canary, if anything.
    """
    table = read_csv(file, need_species=True)
    assert table.species is not None
    species = table.species
    with options(ctx).client() as iris:
        if model_version is not None:
            model_version = version_of(iris, model_version)
        try:
            with progress_bar("predicting", len(table.rows)) as advance:
                batches = iris.predict_batches(
                    table.rows,
                    model_version=model_version,
                    routing_key=routing_key,
                    progress=advance,
                )
        except Exception as error:
            raise line_failure(error, table) from None
        groups: dict[str, list[int]] = {}  # version -> its rows, in order of first answer
        start = 0
        for batch in batches:
            groups.setdefault(batch.model_version, []).extend(range(start, start + len(batch)))
            start += len(batch)
        sent: list[Feedback] = []
        for version, rows in groups.items():
            try:
                sent.append(
                    iris.feedback(
                        version, [table.rows[i] for i in rows], [species[i] for i in rows]
                    )
                )
            except Exception as error:
                failure = failure_for(error)
                if sent:
                    counted = ", ".join(f"{f.count} for {f.model_version}" for f in sent)
                    failure.message += f" (feedback already counted: {counted})"
                raise failure from None
    show_feedback(sent, fmt)


def show_feedback(sent: Sequence[Feedback], fmt: str) -> None:
    if fmt == "json":
        json_line(
            {
                "versions": [
                    {
                        "model_version": f.model_version,
                        "rows": f.count,
                        "correct": f.correct,
                        "accuracy": f.accuracy,
                        "decision": asdict(f.decision) if f.decision else None,
                    }
                    for f in sent
                ]
            }
        )
        return
    from rich.console import Group
    from rich.table import Table as RichTable
    from rich.text import Text

    console = screen_console()
    table = RichTable(box=None, pad_edge=False, header_style="bold")
    table.add_column("VERSION", no_wrap=True)
    for header in ("ROWS", "CORRECT", "ACCURACY"):
        table.add_column(header, justify="right", no_wrap=True)
    for f in sent:
        table.add_row(
            Text(printable(f.model_version)), str(f.count), str(f.correct), ratio(f.accuracy)
        )
    lines = [Text(printable(decision_line(f.decision))) for f in sent if f.decision is not None]
    show(console, Group(table, *lines))


def decision_line(decision: Decision) -> str:
    canary = f"canary {decision.canary}" if decision.canary else "the canary"
    if decision.event == "promotion_failed":
        return f"{canary}: promotion failed: {decision.reason}"
    return f"{canary}: {decision.reason}"


def monitoring_view(found: Monitoring) -> Any:
    """The versions' table, then the drift's: both within 80 columns."""
    from rich.console import Group
    from rich.table import Table as RichTable
    from rich.text import Text

    drift = found.drift
    short = short_of([*found.versions, drift.reference])
    versions = RichTable(box=None, pad_edge=False, header_style="bold")
    versions.add_column("VERSION", no_wrap=True)
    versions.add_column("ROLE", no_wrap=True)
    for header in ("SERVED", "FEEDBACK", "ACCURACY", "SHADOWED", "AGREEMENT"):
        versions.add_column(header, justify="right", no_wrap=True)
    for version, figures in found.versions.items():
        shadow = figures.shadow
        versions.add_row(
            Text(printable(short(version))),
            Text(printable(figures.role or "")),
            str(figures.served),
            str(figures.feedback.count),
            ratio(figures.feedback.accuracy),
            str(shadow.count) if shadow else "-",
            ratio(shadow.agreement) if shadow else "-",
        )
    source = f", by its {drift.reference_source}" if drift.reference_source else ""
    about = Text(
        printable(
            f"drift of the last {drift.rows} inputs (window {drift.window}) from "
            f"{short(drift.reference)}{source}; drifted: PSI above {drift.threshold:g}"
        )
    )
    features = RichTable(box=None, pad_edge=False, header_style="bold")
    features.add_column("FEATURE", no_wrap=True)
    features.add_column("PSI", justify="right", no_wrap=True)
    features.add_column("DRIFTED", no_wrap=True)
    for name, feature in drift.features.items():
        features.add_row(
            Text(printable(name)),
            ratio(feature.psi),
            "yes" if feature.drifted else "no",
        )
    parts: list[Any] = [versions, Text(""), about, features]
    if any(f.psi is None for f in drift.features.values()):
        parts.append(Text("(-: too few inputs in the window for a PSI yet)", style="dim"))
    return Group(*parts)


@cli.command()
@click.option(
    "--watch",
    "-w",
    type=click.FloatRange(min=0.1),
    metavar="SECONDS",
    default=None,
    help="Draw again every SECONDS until Ctrl-C (with -o json: a line each time).",
)
@text_or_json
@click.pass_context
def monitor(ctx: click.Context, /, *, watch: float | None, fmt: str) -> None:
    """Per version: role, rows served, feedback and accuracy, shadow agreement; and
    the drift of the inputs from stable's training data, by feature (PSI)."""
    with options(ctx).client() as iris:
        if watch is None:
            show_monitoring(iris.monitoring(), fmt, screen_console())
            return
        try:
            watch_monitoring(iris, watch, fmt)
        except KeyboardInterrupt:
            return  # Ctrl-C is how a watch ends


def show_monitoring(found: Monitoring, fmt: str, console: Console) -> None:
    if fmt == "json":
        json_line(dict(found.raw))
    else:
        show(console, monitoring_view(found))


def watch_monitoring(iris: IrisClient, every: float, fmt: str) -> None:
    """The monitoring every ``every`` seconds: redrawn in place on a terminal, else printed
    again under a line with the time (-o json: one line of JSON each time)."""
    from datetime import datetime

    from rich.console import Group
    from rich.text import Text

    console = screen_console()

    def heading() -> Text:
        now = datetime.now().astimezone()
        return Text(f"every {every:g} s (Ctrl-C stops): {now:%Y-%m-%d %H:%M:%S %Z}", style="dim")

    if fmt == "json" or not console.is_terminal:
        while True:
            found = iris.monitoring()
            if fmt != "json":
                show(console, heading())
            show_monitoring(found, fmt, console)
            if fmt != "json":
                click.echo()
            sys.stdout.flush()
            time.sleep(every)
    from rich.live import Live

    with Live(console=console, auto_refresh=False) as live:
        while True:
            live.update(Group(heading(), monitoring_view(iris.monitoring())), refresh=True)
            time.sleep(every)


# -- login ------------------------------------------------------------------------------------


@cli.command()
@click.argument("url", required=False)
@click.pass_context
def login(ctx: click.Context, /, *, url: str | None) -> None:
    """Save a server's URL and token for later commands.

    URL defaults to --url or IRIS_URL, else the saved one, else the default.

    \b
    The token is read from a hidden prompt, or from stdin when stdin is not
    a terminal (never from the command line, where shell history keeps it).
    It is checked with an authenticated call that changes nothing, and a
    token the server refuses is not saved (exit 2). Saved, mode 0600, in
    $XDG_CONFIG_HOME/iris/config.json (default ~/.config/iris/config.json);
    --url/--token and IRIS_URL/IRIS_API_TOKEN still take precedence, and the
    saved token is sent only to the saved URL.
    """
    from iris_client import config
    from iris_client.errors import AuthenticationError
    from iris_client.sync import IrisClient

    opts = options(ctx)
    if opts.token_on_command_line:
        raise CommandError(
            "iris login reads the token from a prompt or stdin, not from --token "
            "(shell history would keep it)"
        )
    target = url or opts.url or saved_url() or DEFAULT_URL
    token = read_token()
    try:
        iris = IrisClient(target, token, opts.timeout)
    except ValueError as error:
        raise CommandError(f"URL: {error}") from None
    with iris:
        try:
            verified = iris.check_token()
        except AuthenticationError as error:
            raise CommandError(
                f"{iris.url} refused the token: {error.detail} (HTTP {error.status}); "
                "nothing saved",
                USAGE,
            ) from None
        saved = config.save(config.Login(iris.url, token))
    checked = (
        "token accepted" if verified else "token not verified (the server has no call to check it)"
    )
    click.echo(printable(f"logged in to {iris.url}: {checked}; saved in {saved}"))


def saved_url() -> str | None:
    """The URL of the saved login, to log in to it again; None if there is none to read."""
    from iris_client.config import load
    from iris_client.errors import InputError

    try:
        saved = load()
    except InputError:
        return None
    return saved.url if saved is not None else None


def read_token() -> str:
    """A token from a hidden prompt on a terminal, else the first line of stdin."""
    if sys.stdin.isatty():
        typed = click.prompt("Token", hide_input=True, err=True, default="", show_default=False)
        token = str(typed).strip()
    else:
        token = sys.stdin.readline().strip()
    if not token:
        raise CommandError("no token given (type it at the prompt, or pipe it to stdin)")
    if UNSAFE.search(token) or " " in token:
        raise CommandError("the token holds spaces or control characters")
    return token


@cli.command()
def logout() -> None:
    """Forget the URL and token that iris login saved."""
    from iris_client import config

    removed = config.remove()
    if removed is None:
        click.echo(printable(f"not logged in (no {config.config_path()})"))
    else:
        click.echo(printable(f"logged out: removed {removed}"))
    if os.environ.get("IRIS_API_TOKEN"):
        click.echo("iris: note: IRIS_API_TOKEN is still set in this environment", err=True)


def main() -> NoReturn:
    cli.main(prog_name="iris")
    raise AssertionError("unreachable: main exits")  # pragma: no cover
