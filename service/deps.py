"""Request-scoped helpers: the app's state and the bearer token."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.config import Settings
from service.errors import ProblemError
from service.inference import Inference
from service.launcher import Launcher
from service.registry import Registry
from service.rollout.store import RolloutStore
from service.rollout.traffic import Traffic
from service.stores import Backend, JobStoreLike, ModelStoreLike

log = logging.getLogger("iris.auth")
TOKEN_FILE = "api_token"


@dataclass
class State:
    """What the lifespan builds once per worker and every route reads."""

    settings: Settings
    backend: Backend
    registry: Registry
    launcher: Launcher
    token: bytes
    inference: Inference
    traffic: Traffic

    @property
    def rollout(self) -> RolloutStore:
        assert self.backend.rollout is not None  # a server's backend always has one
        return self.backend.rollout

    @property
    def store(self) -> ModelStoreLike:
        return self.backend.models

    @property
    def jobs(self) -> JobStoreLike:
        return self.backend.jobs


def state(request: Request) -> State:
    value: State = request.app.state.iris
    return value


bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="IRIS_API_TOKEN, or the token in the data directory's api_token file",
)


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Bearer authentication for the mutating endpoints, compared in constant time."""
    expected = state(request).token
    given = credentials.credentials.strip().encode() if credentials else b""
    if credentials is None or not secrets.compare_digest(given, expected):
        header = request.headers.get("authorization", "")
        reason = "missing bearer token" if not header else "invalid bearer token"
        raise ProblemError(
            401,
            f"{reason}: send 'Authorization: Bearer <token>' (IRIS_API_TOKEN, "
            f"or the token in the data directory's {TOKEN_FILE} file)",
            headers={"WWW-Authenticate": 'Bearer realm="iris"'},
        )


# Typed dependencies of the routes: the worker's state, and the bearer token.
AppState = Annotated[State, Depends(state)]
Token = Depends(require_token)


class InsecureTokenFileError(RuntimeError):
    """The token file can be read or written by group or others."""


def check_token_file(path: Path) -> None:
    """Refuse a token file that group or others may read or write (as ssh does for keys)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if mode & 0o077:
        raise InsecureTokenFileError(
            f"{path} is accessible by group or others (mode {mode:04o}): "
            f"run 'chmod 600 {path}' or delete it to have a new token generated"
        )


def resolve_token(settings: Settings) -> bytes:
    """IRIS_API_TOKEN, else the token in DATA_DIR/api_token, generated (mode 0600) if absent.

    A generated token is logged once, by the process that created it.
    """
    if settings.api_token is not None and settings.api_token.get_secret_value():
        log.info("API token taken from IRIS_API_TOKEN")
        return settings.api_token.get_secret_value().encode()
    path = settings.data_dir / TOKEN_FILE
    check_token_file(path)
    created = not path.exists() and create_token_file(path)
    token = path.read_text(encoding="ascii").strip()
    if not token:
        raise RuntimeError(f"{path} is empty: delete it to have a new token generated")
    if created:
        log.warning("API token generated (kept in %s): %s", path, token)
    else:
        log.info("API token read from %s", path)
    return token.encode()


def create_token_file(path: Path) -> bool:
    """Write a new token atomically; False if another worker won the race (its token stays)."""
    tmp = path.with_name(f".{TOKEN_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (secrets.token_urlsafe(32) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if the file exists: first writer wins
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return True
