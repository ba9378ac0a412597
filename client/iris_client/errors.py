"""The client's exceptions, one hierarchy:

- ``IrisError``: everything this package raises on purpose.
  - ``ProblemError``: the server answered with an RFC 9457 problem document (4xx, 5xx).
    - ``BadRequestError`` (400, 413, 415), ``AuthenticationError`` (401, 403),
      ``NotFoundError`` (404), ``ConflictError`` (409), ``ValidationError`` (422),
      ``ServerError`` (5xx; ``UnavailableError`` for 503).
  - ``ConnectionFailedError``: the server could not be reached or went away mid-request.
  - ``ProtocolError``: the server answered with something that is not this API.
  - ``WaitTimeoutError``: a job did not end within ``wait(timeout=...)``.
  - ``InputError``: the caller's rows or CSV cannot be sent (the message names the line).
- ``LimitsWarning``: the server does not publish its limits; documented defaults are used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class IrisError(Exception):
    """Base class of every error this package raises on purpose."""


@dataclass(frozen=True)
class FieldError:
    """One entry of a 422 problem's ``errors``: where (``loc``), what, and its kind."""

    loc: tuple[str | int, ...]
    msg: str
    type: str

    @property
    def where(self) -> str:
        return ".".join(str(part) for part in self.loc)


class ProblemError(IrisError):
    """The server refused a request with a problem document."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        errors: Sequence[FieldError] = (),
        job_id: str | None = None,
        instance: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{detail} (HTTP {status} {title})")
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = tuple(errors)
        self.job_id = job_id
        self.instance = instance
        self.retry_after = retry_after


class BadRequestError(ProblemError):
    """400, 413, 415 and other 4xx without a class of their own."""


class AuthenticationError(ProblemError):
    """401 or 403: the token is missing or wrong."""


class NotFoundError(ProblemError):
    """404: no such job, model version or endpoint."""


class ConflictError(ProblemError):
    """409: a job is running (``job_id`` names it), the job has ended, a version is corrupt."""


class ValidationError(ProblemError):
    """422: a field breaks a rule; ``errors`` lists every field."""


class ServerError(ProblemError):
    """5xx: the server failed; not the caller's fault."""


class UnavailableError(ServerError):
    """503: no model loaded yet, or the jobs database is unavailable."""


class ConnectionFailedError(IrisError):
    """The server could not be reached, or the connection broke before an answer."""


class ProtocolError(IrisError):
    """An answer that is not this API's (not JSON, missing fields): a wrong URL, a proxy."""


class WaitTimeoutError(IrisError, TimeoutError):
    """A job had not ended when ``wait(timeout=...)`` ran out; it keeps running."""

    def __init__(self, job_id: str, status: str, seconds: float) -> None:
        super().__init__(f"job {job_id} is still {status} after {seconds:g} s")
        self.job_id = job_id
        self.status = status


class InputError(IrisError, ValueError):
    """Rows or a CSV file that cannot be sent; the message names the row or line."""


class LimitsWarning(UserWarning):
    """The server has no ``GET /limits``; the smallest documented defaults are used."""


_BY_STATUS: dict[int, type[ProblemError]] = {
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    422: ValidationError,
    503: UnavailableError,
}


def problem_class(status: int) -> type[ProblemError]:
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else BadRequestError


def field_errors(raw: Any) -> list[FieldError]:
    """The ``errors`` member of a problem document, tolerating what is not a list of dicts."""
    if not isinstance(raw, list):
        return []
    found = []
    for entry in raw:
        if isinstance(entry, dict):
            loc = entry.get("loc", ())
            found.append(
                FieldError(
                    loc=tuple(p for p in loc if isinstance(p, (str, int)))
                    if isinstance(loc, list)
                    else (),
                    msg=str(entry.get("msg", "")),
                    type=str(entry.get("type", "")),
                )
            )
    return found
