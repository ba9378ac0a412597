"""The ``iris-serve`` command line: one flag per setting, built from ``Settings.model_fields``.

Every field of :class:`service.config.Settings` becomes ``--kebab-name`` (a bool becomes
``--name/--no-name``), except the secrets in :data:`ENV_ONLY`, which a command line would show
to anyone running ``ps``. The parser converts nothing: it collects the flags given, as strings,
and ``Settings(**given)`` validates them with the same rules as the environment, giving init
values priority over ``IRIS_*`` variables (flag > environment > default).

uvicorn builds the app in each worker (and in the one process of a single-worker server) from
``service.main:create_app``, which reads ``get_settings()`` from the environment: so
:func:`export_settings` writes the values of the flags given to ``IRIS_*`` variables before
``uvicorn.run``.
"""

from __future__ import annotations

import argparse
import os
import textwrap
import types
import typing
from collections.abc import Iterable, MutableMapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo

from service.config import Settings

PROG = "iris-serve"
DISTRIBUTION = "iris-service"
ENV_ONLY = frozenset({"api_token"})
"""Settings without a flag: a secret on a command line is visible in ``ps`` to every user."""
SECRET_VALUES = frozenset({"api_token", "database_url"})
"""Settings whose values never appear in an error message."""
GROUPS: dict[str, tuple[str, ...]] = {
    "serving": (
        "host",
        "port",
        "workers",
        "log_level",
        "access_log",
        "graceful_shutdown_seconds",
        "blas_threads",
    ),
    "storage": ("data_dir", "database_url", "model_poll_seconds", "job_heartbeat_timeout"),
    "request limits": (
        "max_instances",
        "max_answer_values",
        "max_body_bytes",
        "max_buffered_bytes",
        "body_timeout_seconds",
        "body_min_rate",
        "body_rate_grace_seconds",
        "header_timeout_seconds",
    ),
    "connection limits": (
        "max_connections",
        "max_idle_connections",
        "max_event_streams",
        "max_event_streams_per_job",
    ),
    "training": ("max_train_rows", "max_training_seconds", "jobs_listed", "seed"),
}
"""Help sections; a field in none of them is listed under "other settings"."""
EXTRA_HELP = {
    "database_url": "a URL with a password is safer in the environment: ps shows command lines",
    "api_token": "a generated one is kept in DATA_DIR/api_token",
}
DESCRIPTION = (
    "Serve the Iris classifier over HTTP under uvicorn. Every option below can also be set by "
    "the IRIS_* environment variable named next to it; a flag wins over the environment, which "
    "wins over the default."
)


def flag(name: str) -> str:
    """``max_instances`` -> ``--max-instances``."""
    return "--" + name.replace("_", "-")


def env_var(name: str) -> str:
    """``max_instances`` -> ``IRIS_MAX_INSTANCES``."""
    return f"{Settings.model_config.get('env_prefix', '')}{name}".upper()


def package_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"


def _base_type(annotation: Any) -> Any:
    """``SecretStr | None`` -> ``SecretStr``; other annotations unchanged."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def _metavar(annotation: Any) -> str:
    base = _base_type(annotation)
    if typing.get_origin(base) is typing.Literal:
        return "{" + ",".join(str(choice) for choice in typing.get_args(base)) + "}"
    if base is SecretStr:
        return "URL"
    if isinstance(base, type) and issubclass(base, Path):
        return "PATH"
    return {int: "INT", float: "NUMBER"}.get(base, "TEXT")


def _default(field: FieldInfo) -> str:
    default = field.get_default(call_default_factory=True)
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return "on" if default else "off"
    return str(default)


def _help(name: str, field: FieldInfo) -> str:
    parts = [field.description or name.replace("_", " ")]
    if name in EXTRA_HELP:
        parts.append(EXTRA_HELP[name])
    text = "; ".join(parts) + f" [{env_var(name)}, default: {_default(field)}]"
    return text.replace("%", "%%")  # argparse %-formats help strings


def _grouped(names: Iterable[str]) -> list[tuple[str, list[str]]]:
    """``names`` in their help sections, the sections in GROUPS order, unknown ones last."""
    remaining = list(names)
    sections = []
    for title, members in GROUPS.items():
        listed = [name for name in members if name in remaining]
        sections.append((title, listed))
        remaining = [name for name in remaining if name not in listed]
    sections.append(("other settings", remaining))
    return [(title, listed) for title, listed in sections if listed]


def _epilog() -> str:
    fields = Settings.model_fields
    lines = ["environment only (a value on a command line is visible in ps):"]
    for name in fields:
        if name in ENV_ONLY:
            lines.append(f"  {env_var(name)}")
            lines += _wrap(_help(name, fields[name]).replace("%%", "%"), indent=6)
    lines += [
        "",
        "commands:",
        f"  {PROG} migrate [DATA_DIR]",
        *_wrap(
            "copy a data directory's models into the database named by IRIS_DATABASE_URL "
            f"(see {PROG} migrate --help)",
            indent=6,
        ),
    ]
    return "\n".join(lines)


def _wrap(text: str, indent: int = 0) -> list[str]:
    return textwrap.wrap(
        text, width=78, initial_indent=" " * indent, subsequent_indent=" " * indent
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser: every option's default is SUPPRESS, so the namespace holds the flags given."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=f"%(prog)s [OPTIONS]\n       {PROG} migrate [DATA_DIR]",
        description="\n".join(_wrap(DESCRIPTION)),
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {package_version()}")
    fields = Settings.model_fields
    flagged = [name for name in fields if name not in ENV_ONLY]
    for title, names in _grouped(flagged):
        group = parser.add_argument_group(title)
        for name in names:
            field = fields[name]
            if _base_type(field.annotation) is bool:
                group.add_argument(
                    flag(name),
                    dest=name,
                    action=argparse.BooleanOptionalAction,
                    help=_help(name, field),
                )
            else:
                group.add_argument(
                    flag(name),
                    dest=name,
                    metavar=_metavar(field.annotation),
                    help=_help(name, field),
                )
    return parser


def parse_flags(argv: Sequence[str]) -> dict[str, Any]:
    """The settings given on the command line, by field name, unconverted (strings, or bools).

    ``--help`` and ``--version`` print and raise SystemExit(0); an unknown flag, a stray
    argument or a flag without its value raise SystemExit(2) after argparse's usage error.
    """
    return dict(vars(build_parser().parse_args(list(argv))))


def describe(error: ValidationError, given: Iterable[str]) -> str:
    """One line per problem, naming the flag when it was given, else the variable."""
    given = set(given)
    problems = []
    for detail in error.errors():
        name = str(detail["loc"][0]) if detail["loc"] else ""
        where = flag(name) if name in given else env_var(name)
        text = f"{where}: {detail['msg']}"
        if name not in SECRET_VALUES and "input" in detail:
            text += f" (got {detail['input']!r})"
        problems.append(text)
    return "; ".join(problems)


def settings_from(given: dict[str, Any]) -> Settings:
    """Settings with ``given`` over the environment over the defaults; raises ValidationError."""
    return Settings(**given)


def export_settings(
    settings: Settings, given: Iterable[str], environ: MutableMapping[str, str] | None = None
) -> None:
    """Write the final value of every setting given as a flag to its ``IRIS_*`` variable.

    Variables that differ only in case are removed first: pydantic-settings matches names
    case-insensitively, so a lowercase ``iris_port`` could otherwise shadow ``IRIS_PORT``.
    """
    environ = os.environ if environ is None else environ
    for name in given:
        variable = env_var(name)
        for key in [key for key in environ if key.upper() == variable]:
            del environ[key]
        environ[variable] = _as_env(getattr(settings, name))


def _as_env(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
